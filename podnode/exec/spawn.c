/* pod-spawn: put this process into an execution's cgroups, set its rlimits, drop to the run-as user and exec
 * the command: the sandbox of podnode/exec/sandbox.py in one exec instead of a root `sh` wrapper that execs
 * `setpriv`. The node compiles it on first use (sandbox.spawn_helper); without a C compiler it keeps the wrapper.
 *
 *   pod-spawn [-c CGROUP_PROCS_FILE]... [-v KIB] [-p NPROC] [-u UID -g GID] -- COMMAND [ARG]...
 *
 *   -c  write our own pid into this cgroup.procs (joins before COMMAND exists: nothing it starts escapes)
 *   -v  RLIMIT_AS in KiB, soft and hard (what `ulimit -v` sets; used where there is no cgroup)
 *   -p  RLIMIT_NPROC, soft and hard (`ulimit -p`)
 *   -u, -g  setgroups(0), setresgid, setresuid to these ids, then no_new_privs (what
 *       `setpriv --reuid --regid --clear-groups --no-new-privs` does)
 *
 * Exit 125 when a step fails (sandbox.WRAPPER_FAILED), 126/127 when COMMAND cannot be executed / is not found,
 * as a shell would. The environment, the working directory, the session and the file descriptors are the
 * caller's (Popen's): nothing here reads the environment except execvp's PATH lookup.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define FAILED 125
#define MAX_CGROUPS 8

static void fail(const char *what, const char *arg, int err) {
    dprintf(2, "pod-spawn: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "", strerror(err));
    _exit(FAILED);
}

static unsigned long number(const char *s, unsigned long max) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || v > max)
        fail("bad number", s, EINVAL);
    return v;
}

static void join(const char *procs_file, const char *pid, size_t len) {
    int fd = open(procs_file, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        fail("cannot open", procs_file, errno);
    if (write(fd, pid, len) != (ssize_t)len)
        fail("cannot join the cgroup", procs_file, errno);
    if (close(fd) != 0)
        fail("cannot join the cgroup", procs_file, errno);
}

static void limit(int resource, rlim_t value, const char *name) {
    struct rlimit rl = {value, value};
    if (setrlimit(resource, &rl) != 0)
        fail("cannot set", name, errno);
}

int main(int argc, char **argv) {
    const char *cgroups[MAX_CGROUPS];
    int ncgroups = 0, i = 1;
    long long uid = -1, gid = -1, as_kib = -1, nproc = -1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc || argv[i][0] != '-' || argv[i][1] == '\0' || argv[i][2] != '\0')
            fail("bad arguments near", argv[i], EINVAL);
        const char *v = argv[i + 1];
        switch (argv[i][1]) {
        case 'c':
            if (ncgroups == MAX_CGROUPS)
                fail("too many cgroups at", v, E2BIG);
            cgroups[ncgroups++] = v;
            break;
        case 'v': as_kib = (long long)number(v, ULONG_MAX / 1024); break;
        case 'p': nproc = (long long)number(v, INT_MAX); break;
        case 'u': uid = (long long)number(v, 0xfffffffeUL); break;
        case 'g': gid = (long long)number(v, 0xfffffffeUL); break;
        default: fail("unknown option", argv[i], EINVAL);
        }
    }
    if (i + 1 >= argc)
        fail("no command after", "--", EINVAL);
    if ((uid < 0) != (gid < 0) || uid == 0)
        fail("-u and -g go together, and -u may not be", "0", EINVAL);

    char pid[24];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    for (int c = 0; c < ncgroups; c++)
        join(cgroups[c], pid, (size_t)len);
    if (as_kib >= 0)
        limit(RLIMIT_AS, (rlim_t)as_kib * 1024, "RLIMIT_AS");
    if (nproc >= 0)
        limit(RLIMIT_NPROC, (rlim_t)nproc, "RLIMIT_NPROC");
    if (uid >= 0) {
        if (setgroups(0, NULL) != 0)
            fail("setgroups", NULL, errno);
        if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0)
            fail("setresgid", NULL, errno);
        if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0)
            fail("setresuid", NULL, errno);
        uid_t r, e, s;
        if (getresuid(&r, &e, &s) != 0 || r != (uid_t)uid || e != (uid_t)uid || s != (uid_t)uid ||
            setuid(0) == 0)
            fail("the user switch did not hold", NULL, EPERM);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            fail("no_new_privs", NULL, errno);
    }
    execvp(argv[i + 1], argv + i + 1);
    int err = errno;
    dprintf(2, "pod-spawn: cannot execute %s: %s\n", argv[i + 1], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}
