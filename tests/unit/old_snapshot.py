"""A snapshot of the state written by the code before the state machine was split by resource (commit 9b75779,
`State(PolicyCommands, MembershipCommands)` in podnode/raft/state.py), kept so that every later version is tested
against it: SNAPSHOT is what that State.to_dict() returned for a state with a bit of everything (nodes up,
draining, lost and left, a launched node and a launch in flight, a failed launch, activities approved, verifying
and rejected with installations in every status, executions waiting, retried, finished, failed and terminated
with their output pending, a request id, two scaling policies, one active), and PACKED the msgpack bytes that
code packed it into (the replica writes them under "state" in its snapshot file). Generated once; never edit.
"""

SNAPSHOT = {'activities': {'act': {'id': 1,
                                   'name': 'act',
                                   'installationScriptLocation': 'http://scripts/act.sh',
                                   'status': 'approved',
                                   'createdAt': 1000.0,
                                   'maxAttempts': 2,
                                   'meanRuntimeS': 1.4000000000000001},
                           'ver': {'id': 2,
                                   'name': 'ver',
                                   'installationScriptLocation': 'http://scripts/ver.sh',
                                   'status': 'verifying',
                                   'createdAt': 1000.0,
                                   'maxAttempts': 3},
                           'bad': {'id': 3,
                                   'name': 'bad',
                                   'installationScriptLocation': 'http://scripts/bad.sh',
                                   'status': 'rejected',
                                   'createdAt': 1000.0,
                                   'maxAttempts': 3,
                                   'errorDescription': 'exit 1'}},
            'installations': {'act': {'n1': {'status': 'installed', 'since': 1000.0},
                                      'n2': {'status': 'installed', 'since': 1000.0},
                                      'n3': {'status': 'installing', 'since': 1000.0},
                                      'w1': {'status': 'installed', 'since': 1000.0}},
                              'ver': {'n2': {'status': 'installing', 'since': 1000.0}},
                              'bad': {'n1': {'status': 'failed', 'since': 1000.0, 'errorDescription': 'exit 1'}}},
            'executions': {1: {'id': 1,
                               'activityId': 1,
                               'activityName': 'act',
                               'stdin': 'one',
                               'status': 'finished',
                               'submitTime': 1005.0,
                               'startTime': 1006.0,
                               'finishTime': 1007.0,
                               'workerId': 'n1',
                               'attempt': 1,
                               'exitCode': 0,
                               'stdout': 'hello\n',
                               'stderr': '',
                               'requestId': 'req-1',
                               'workerIncarnation': 'n1-a',
                               'stdoutTruncated': False,
                               'stderrTruncated': False},
                           2: {'id': 2,
                               'activityId': 1,
                               'activityName': 'act',
                               'stdin': '',
                               'status': 'terminated',
                               'submitTime': 1005.0,
                               'startTime': 1006.0,
                               'finishTime': 1008.0,
                               'workerId': 'n1',
                               'attempt': 1,
                               'exitCode': None,
                               'stdout': '',
                               'stderr': '',
                               'workerIncarnation': 'n1-a',
                               'errorDescription': 'terminated by request',
                               'outputPending': True},
                           3: {'id': 3,
                               'activityId': 1,
                               'activityName': 'act',
                               'stdin': '',
                               'status': 'error',
                               'submitTime': 1005.0,
                               'startTime': 1006.0,
                               'finishTime': 1009.0,
                               'workerId': 'n2',
                               'attempt': 1,
                               'exitCode': 3,
                               'stdout': '',
                               'stderr': 'bad\n',
                               'workerIncarnation': 'n2-a',
                               'errorDescription': 'exit code 3',
                               'stdoutTruncated': False,
                               'stderrTruncated': True},
                           4: {'id': 4,
                               'activityId': 1,
                               'activityName': 'act',
                               'stdin': 'four',
                               'status': 'waiting',
                               'submitTime': 1005.0,
                               'startTime': None,
                               'finishTime': None,
                               'workerId': None,
                               'attempt': 1,
                               'exitCode': None,
                               'stdout': '',
                               'stderr': '',
                               'lastError': 'node w1 was lost (unreachable for 3.2 s)'},
                           5: {'id': 5,
                               'activityId': 1,
                               'activityName': 'act',
                               'stdin': '',
                               'status': 'waiting',
                               'submitTime': 1005.0,
                               'startTime': None,
                               'finishTime': None,
                               'workerId': None,
                               'attempt': 0,
                               'exitCode': None,
                               'stdout': '',
                               'stderr': ''},
                           6: {'id': 6,
                               'activityId': 2,
                               'activityName': 'ver',
                               'stdin': 'six',
                               'status': 'waiting',
                               'submitTime': 1005.0,
                               'startTime': None,
                               'finishTime': None,
                               'workerId': None,
                               'attempt': 0,
                               'exitCode': None,
                               'stdout': '',
                               'stderr': ''}},
            'nodes': {'n1': {'id': 'n1',
                             'joinedAt': 1000.0,
                             'raftAddr': 'n1:4000',
                             'httpUrl': 'http://n1:8000',
                             'slots': 2,
                             'version': '1',
                             'incarnation': 'n1-a',
                             'role': 'voter',
                             'seenAt': 1000.0,
                             'status': 'up',
                             'lastWorkAt': 1007.0},
                      'n2': {'id': 'n2',
                             'joinedAt': 1000.0,
                             'raftAddr': 'n2:4000',
                             'httpUrl': 'http://n2:8000',
                             'slots': 1,
                             'version': '1',
                             'incarnation': 'n2-a',
                             'role': 'voter',
                             'seenAt': 1000.0,
                             'status': 'up',
                             'lastWorkAt': 1009.0},
                      'n3': {'id': 'n3',
                             'joinedAt': 1000.0,
                             'raftAddr': 'n3:4000',
                             'httpUrl': 'http://n3:8000',
                             'slots': 1,
                             'version': '1',
                             'incarnation': 'n3-a',
                             'role': 'voter',
                             'seenAt': 1000.0,
                             'status': 'draining',
                             'drainDeadline': 1071.0,
                             'drainReason': 'asked to leave'},
                      'n4': {'id': 'n4',
                             'joinedAt': 1000.0,
                             'raftAddr': 'n4:4000',
                             'httpUrl': 'http://n4:8000',
                             'slots': 1,
                             'version': '1',
                             'incarnation': 'n4-a',
                             'role': 'voter',
                             'seenAt': 1000.0,
                             'status': 'left',
                             'leftAt': 1012.0},
                      'w1': {'id': 'w1',
                             'joinedAt': 1003.0,
                             'raftAddr': 'w1:4000',
                             'httpUrl': 'http://w1:8000',
                             'slots': 1,
                             'version': '1',
                             'incarnation': 'w1-a',
                             'role': 'observer',
                             'seenAt': 1003.0,
                             'status': 'lost',
                             'provider': 'local',
                             'ref': 'pid-41',
                             'hourlyPrice': 0.5,
                             'removable': True,
                             'lastWorkAt': 1006.0,
                             'lostAt': 1010.0,
                             'lostReason': 'node w1 was lost (unreachable for 3.2 s)'}},
            'request_ids': {'req-1': [1, 1005.0]},
            'policies': {'grow': {'name': 'grow',
                                  'rules': {'minWorkers': 1, 'maxWorkers': 4, 'maxWait': 2000},
                                  'createdAt': 1000.0},
                         'fixed': {'name': 'fixed', 'rules': {'fixedWorkers': 2}, 'createdAt': 1000.0}},
            'active_policy': 'grow',
            'launches': {'w2': {'provider': 'local', 'ref': '', 'hourlyPrice': 0.5, 'launchedAt': 1000.0}},
            'launch_failures': {'count': 1, 'lastAt': 1002.0, 'lastNode': 'w3', 'lastReason': 'no capacity'},
            'next_activity_id': 4,
            'next_execution_id': 7}

PACKED = bytes.fromhex(
    "8baa6163746976697469657383a361637487a2696401a46e616d65a3616374ba696e7374616c6c6174696f6e5363726970744c6f63617469"
    "6f6eb5687474703a2f2f736372697074732f6163742e7368a6737461747573a8617070726f766564a9637265617465644174cb408f400000"
    "000000ab6d6178417474656d70747302ac6d65616e52756e74696d6553cb3ff6666666666667a376657286a2696402a46e616d65a3766572"
    "ba696e7374616c6c6174696f6e5363726970744c6f636174696f6eb5687474703a2f2f736372697074732f7665722e7368a6737461747573"
    "a9766572696679696e67a9637265617465644174cb408f400000000000ab6d6178417474656d70747303a362616487a2696403a46e616d65"
    "a3626164ba696e7374616c6c6174696f6e5363726970744c6f636174696f6eb5687474703a2f2f736372697074732f6261642e7368a67374"
    "61747573a872656a6563746564a9637265617465644174cb408f400000000000ab6d6178417474656d70747303b06572726f724465736372"
    "697074696f6ea6657869742031ad696e7374616c6c6174696f6e7383a361637484a26e3182a6737461747573a9696e7374616c6c6564a573"
    "696e6365cb408f400000000000a26e3282a6737461747573a9696e7374616c6c6564a573696e6365cb408f400000000000a26e3382a67374"
    "61747573aa696e7374616c6c696e67a573696e6365cb408f400000000000a2773182a6737461747573a9696e7374616c6c6564a573696e63"
    "65cb408f400000000000a376657281a26e3282a6737461747573aa696e7374616c6c696e67a573696e6365cb408f400000000000a3626164"
    "81a26e3183a6737461747573a66661696c6564a573696e6365cb408f400000000000b06572726f724465736372697074696f6ea665786974"
    "2031aa657865637574696f6e738601de0011a2696401aa6163746976697479496401ac61637469766974794e616d65a3616374a573746469"
    "6ea36f6e65a6737461747573a866696e6973686564aa7375626d697454696d65cb408f680000000000a9737461727454696d65cb408f7000"
    "00000000aa66696e69736854696d65cb408f780000000000a8776f726b65724964a26e31a7617474656d707401a865786974436f646500a6"
    "7374646f7574a668656c6c6f0aa6737464657272a0a9726571756573744964a57265712d31b1776f726b6572496e6361726e6174696f6ea4"
    "6e312d61af7374646f75745472756e6361746564c2af7374646572725472756e6361746564c202de0010a2696402aa616374697669747949"
    "6401ac61637469766974794e616d65a3616374a5737464696ea0a6737461747573aa7465726d696e61746564aa7375626d697454696d65cb"
    "408f680000000000a9737461727454696d65cb408f700000000000aa66696e69736854696d65cb408f800000000000a8776f726b65724964"
    "a26e31a7617474656d707401a865786974436f6465c0a67374646f7574a0a6737464657272a0b1776f726b6572496e6361726e6174696f6e"
    "a46e312d61b06572726f724465736372697074696f6eb57465726d696e617465642062792072657175657374ad6f757470757450656e6469"
    "6e67c303de0011a2696403aa6163746976697479496401ac61637469766974794e616d65a3616374a5737464696ea0a6737461747573a565"
    "72726f72aa7375626d697454696d65cb408f680000000000a9737461727454696d65cb408f700000000000aa66696e69736854696d65cb40"
    "8f880000000000a8776f726b65724964a26e32a7617474656d707401a865786974436f646503a67374646f7574a0a6737464657272a46261"
    "640ab1776f726b6572496e6361726e6174696f6ea46e322d61b06572726f724465736372697074696f6eab6578697420636f64652033af73"
    "74646f75745472756e6361746564c2af7374646572725472756e6361746564c3048ea2696404aa6163746976697479496401ac6163746976"
    "6974794e616d65a3616374a5737464696ea4666f7572a6737461747573a777616974696e67aa7375626d697454696d65cb408f6800000000"
    "00a9737461727454696d65c0aa66696e69736854696d65c0a8776f726b65724964c0a7617474656d707401a865786974436f6465c0a67374"
    "646f7574a0a6737464657272a0a96c6173744572726f72d9286e6f646520773120776173206c6f73742028756e726561636861626c652066"
    "6f7220332e32207329058da2696405aa6163746976697479496401ac61637469766974794e616d65a3616374a5737464696ea0a673746174"
    "7573a777616974696e67aa7375626d697454696d65cb408f680000000000a9737461727454696d65c0aa66696e69736854696d65c0a8776f"
    "726b65724964c0a7617474656d707400a865786974436f6465c0a67374646f7574a0a6737464657272a0068da2696406aa61637469766974"
    "79496402ac61637469766974794e616d65a3766572a5737464696ea3736978a6737461747573a777616974696e67aa7375626d697454696d"
    "65cb408f680000000000a9737461727454696d65c0aa66696e69736854696d65c0a8776f726b65724964c0a7617474656d707400a8657869"
    "74436f6465c0a67374646f7574a0a6737464657272a0a56e6f64657385a26e318ba26964a26e31a86a6f696e65644174cb408f4000000000"
    "00a87261667441646472a76e313a34303030a76874747055726cae687474703a2f2f6e313a38303030a5736c6f747302a776657273696f6e"
    "a131ab696e6361726e6174696f6ea46e312d61a4726f6c65a5766f746572a67365656e4174cb408f400000000000a6737461747573a27570"
    "aa6c617374576f726b4174cb408f780000000000a26e328ba26964a26e32a86a6f696e65644174cb408f400000000000a872616674416464"
    "72a76e323a34303030a76874747055726cae687474703a2f2f6e323a38303030a5736c6f747301a776657273696f6ea131ab696e6361726e"
    "6174696f6ea46e322d61a4726f6c65a5766f746572a67365656e4174cb408f400000000000a6737461747573a27570aa6c617374576f726b"
    "4174cb408f880000000000a26e338ca26964a26e33a86a6f696e65644174cb408f400000000000a87261667441646472a76e333a34303030"
    "a76874747055726cae687474703a2f2f6e333a38303030a5736c6f747301a776657273696f6ea131ab696e6361726e6174696f6ea46e332d"
    "61a4726f6c65a5766f746572a67365656e4174cb408f400000000000a6737461747573a8647261696e696e67ad647261696e446561646c69"
    "6e65cb4090bc0000000000ab647261696e526561736f6eae61736b656420746f206c65617665a26e348ba26964a26e34a86a6f696e656441"
    "74cb408f400000000000a87261667441646472a76e343a34303030a76874747055726cae687474703a2f2f6e343a38303030a5736c6f7473"
    "01a776657273696f6ea131ab696e6361726e6174696f6ea46e342d61a4726f6c65a5766f746572a67365656e4174cb408f400000000000a6"
    "737461747573a46c656674a66c6566744174cb408fa00000000000a27731de0011a26964a27731a86a6f696e65644174cb408f5800000000"
    "00a87261667441646472a777313a34303030a76874747055726cae687474703a2f2f77313a38303030a5736c6f747301a776657273696f6e"
    "a131ab696e6361726e6174696f6ea477312d61a4726f6c65a86f62736572766572a67365656e4174cb408f580000000000a6737461747573"
    "a46c6f7374a870726f7669646572a56c6f63616ca3726566a67069642d3431ab686f75726c795072696365cb3fe0000000000000a972656d"
    "6f7661626c65c3aa6c617374576f726b4174cb408f700000000000a66c6f73744174cb408f900000000000aa6c6f7374526561736f6ed928"
    "6e6f646520773120776173206c6f73742028756e726561636861626c6520666f7220332e32207329ab726571756573745f69647381a57265"
    "712d319201cb408f680000000000a8706f6c696369657382a467726f7783a46e616d65a467726f77a572756c657383aa6d696e576f726b65"
    "727301aa6d6178576f726b65727304a76d617857616974cd07d0a9637265617465644174cb408f400000000000a5666978656483a46e616d"
    "65a56669786564a572756c657381ac6669786564576f726b65727302a9637265617465644174cb408f400000000000ad6163746976655f70"
    "6f6c696379a467726f77a86c61756e6368657381a2773284a870726f7669646572a56c6f63616ca3726566a0ab686f75726c795072696365"
    "cb3fe0000000000000aa6c61756e636865644174cb408f400000000000af6c61756e63685f6661696c7572657384a5636f756e7401a66c61"
    "73744174cb408f500000000000a86c6173744e6f6465a27733aa6c617374526561736f6eab6e6f206361706163697479b06e6578745f6163"
    "7469766974795f696404b16e6578745f657865637574696f6e5f696407"
)
