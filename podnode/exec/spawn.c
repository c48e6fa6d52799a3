/* pod-spawn: put this process into an execution's cgroups, set its rlimits, drop to the run-as user and exec
 * the command: the sandbox of podnode/exec/sandbox.py in one exec instead of a root `sh` wrapper that execs
 * `setpriv`. The node compiles it on first use (sandbox.spawn_helper); without a C compiler it keeps the wrapper.
 *
 *   pod-spawn [-c CGROUP_PROCS_FILE]... [-v KIB] [-p NPROC] [-u UID -g GID] -- COMMAND [ARG]...
 *   pod-spawn -a CONTROL_FD -P NODE_PID [-c CGROUP_PROCS_FILE]...          (armed: see below)
 *
 *   -c  write our own pid into this cgroup.procs (joins before COMMAND exists: nothing it starts escapes)
 *   -v  RLIMIT_AS in KiB, soft and hard (what `ulimit -v` sets; used where there is no cgroup)
 *   -p  RLIMIT_NPROC, soft and hard (`ulimit -p`)
 *   -u, -g  setgroups(0), setresgid, setresuid to these ids, then no_new_privs (what
 *       `setpriv --reuid --regid --clear-groups --no-new-privs` does)
 *
 * Armed (-a): the slow part, joining the cgroups (the first move into a v1 cgroup after a pause waits for an RCU
 * grace period, 8-11 ms), is done ahead of the execution. The helper joins, says "R" on CONTROL_FD (a unix stream
 * socket only the node holds the other end of; it is close-on-exec here), and waits, still root, for its one job:
 * one message carrying two descriptors (the execution's stdout and stderr) and the bytes
 *     CWD \0 ENV-ENTRY \0 ... \0 [OPTION \0]... -- \0 COMMAND \0 [ARG \0]...
 * up to EOF, where the options are -v, -p, -u, -g as above (-c is not: the cells are joined). Then it does what the
 * plain form does after joining: chdir, rlimits, user switch, exec, with exactly that environment. Until the job it
 * dies with the node (PR_SET_PDEATHSIG, checked against NODE_PID); the parent-death signal is cleared before the
 * exec, so the execution is what a plain spawn makes. A failure before the job is written on CONTROL_FD (the node
 * logs it); EOF instead of a job (the node disarms it) exits 0.
 *
 * Exit 125 when a step fails (sandbox.WRAPPER_FAILED), 126/127 when COMMAND cannot be executed / is not found,
 * as a shell would. The environment, the working directory, the session and the file descriptors are the
 * caller's (Popen's, or the job's when armed): nothing here reads the environment except execvp's PATH lookup.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAILED 125
#define MAX_CGROUPS 8
#define MAX_JOB (8 << 20)   /* bytes of one armed job: input (64 KiB by default), environment and paths */

extern char **environ;
static int report_fd = 2;   /* where a failure is said: stderr, or the control socket while armed */

static void fail(const char *what, const char *arg, int err) {
    dprintf(report_fd, "pod-spawn: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "", strerror(err));
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

struct options {
    const char *cgroups[MAX_CGROUPS];
    int ncgroups;
    long long uid, gid, as_kib, nproc, control, node;
};

/* Parse OPTION VALUE pairs from args[i] up to "--" (or the end); the index of "--" (or n). */
static int parse(char **args, int i, int n, struct options *o, const char *allowed) {
    for (; i < n && strcmp(args[i], "--") != 0; i += 2) {
        if (i + 1 >= n || args[i][0] != '-' || args[i][1] == '\0' || args[i][2] != '\0' ||
            strchr(allowed, args[i][1]) == NULL)
            fail(i + 1 >= n ? "bad arguments near" : "unknown option", args[i], EINVAL);
        const char *v = args[i + 1];
        switch (args[i][1]) {
        case 'c':
            if (o->ncgroups == MAX_CGROUPS)
                fail("too many cgroups at", v, E2BIG);
            o->cgroups[o->ncgroups++] = v;
            break;
        case 'v': o->as_kib = (long long)number(v, ULONG_MAX / 1024); break;
        case 'p': o->nproc = (long long)number(v, INT_MAX); break;
        case 'u': o->uid = (long long)number(v, 0xfffffffeUL); break;
        case 'g': o->gid = (long long)number(v, 0xfffffffeUL); break;
        case 'a': o->control = (long long)number(v, INT_MAX); break;
        case 'P': o->node = (long long)number(v, INT_MAX); break;
        }
    }
    return i;
}

static void join_all(const struct options *o) {
    char pid[24];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    for (int c = 0; c < o->ncgroups; c++)
        join(o->cgroups[c], pid, (size_t)len);
}

/* What follows the cgroups: rlimits, the user switch, the exec of args[i..]. */
static void check_user(const struct options *o) {
    if ((o->uid < 0) != (o->gid < 0) || o->uid == 0)
        fail("-u and -g go together, and -u may not be", "0", EINVAL);
}

static void become(const struct options *o, char **command) {
    check_user(o);
    if (o->as_kib >= 0)
        limit(RLIMIT_AS, (rlim_t)o->as_kib * 1024, "RLIMIT_AS");
    if (o->nproc >= 0)
        limit(RLIMIT_NPROC, (rlim_t)o->nproc, "RLIMIT_NPROC");
    if (o->uid >= 0) {
        if (setgroups(0, NULL) != 0)
            fail("setgroups", NULL, errno);
        if (setresgid((gid_t)o->gid, (gid_t)o->gid, (gid_t)o->gid) != 0)
            fail("setresgid", NULL, errno);
        if (setresuid((uid_t)o->uid, (uid_t)o->uid, (uid_t)o->uid) != 0)
            fail("setresuid", NULL, errno);
        uid_t r, e, s;
        if (getresuid(&r, &e, &s) != 0 || r != (uid_t)o->uid || e != (uid_t)o->uid || s != (uid_t)o->uid ||
            setuid(0) == 0)
            fail("the user switch did not hold", NULL, EPERM);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            fail("no_new_privs", NULL, errno);
    }
    execvp(command[0], command);
    int err = errno;
    dprintf(2, "pod-spawn: cannot execute %s: %s\n", command[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* Armed: wait for the job on the control socket; its descriptors become stdout and stderr. */
static void armed(struct options *o) {
    int ctl = (int)o->control;
    if (fcntl(ctl, F_SETFD, FD_CLOEXEC) != 0)
        fail("bad control descriptor", NULL, errno);
    report_fd = ctl;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != (pid_t)o->node)
        fail("the node is gone", NULL, ESRCH);
    join_all(o);
    if (write(ctl, "R", 1) != 1)
        _exit(0);

    size_t cap = 64 << 10, len = 0;
    char *job = malloc(cap + 1);
    int fds[2] = {-1, -1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof fds)]; } control;
    struct iovec iov = {job, cap};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    if (job == NULL)
        fail("no memory for the job", NULL, ENOMEM);
    ssize_t got;
    while ((got = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (got <= 0)
        _exit(0);   /* disarmed: the node closed its end */
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof fds) || (msg.msg_flags & MSG_CTRUNC))
        fail("the job came without its stdout and stderr", NULL, EINVAL);
    memcpy(fds, CMSG_DATA(c), sizeof fds);
    for (len = (size_t)got;; len += (size_t)got) {
        if (len == cap) {
            if (cap >= MAX_JOB)
                fail("the job is too long", NULL, E2BIG);
            cap *= 2;
            if ((job = realloc(job, cap + 1)) == NULL)
                fail("no memory for the job", NULL, ENOMEM);
        }
        while ((got = read(ctl, job + len, cap - len)) < 0 && errno == EINTR)
            ;
        if (got < 0)
            fail("cannot read the job", NULL, errno);
        if (got == 0)
            break;
    }
    if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) != 0)
        fail("cannot clear the parent-death signal", NULL, errno);
    if (dup2(fds[0], 1) != 1 || dup2(fds[1], 2) != 2)
        fail("cannot take the job's stdout and stderr", NULL, errno);
    report_fd = 2;
    close(fds[0]);
    close(fds[1]);
    close(ctl);

    /* Split the job into its strings: it must end with a NUL. */
    if (len == 0 || job[len - 1] != '\0')
        fail("the job is not NUL-terminated", NULL, EINVAL);
    int n = 0;
    for (size_t k = 0; k < len; k++)
        n += job[k] == '\0';
    char **strs = calloc((size_t)n + 1, sizeof *strs);
    if (strs == NULL)
        fail("no memory for the job", NULL, ENOMEM);
    for (size_t k = 0, start = 0, s = 0; k < len; k++)
        if (job[k] == '\0') {
            strs[s++] = job + start;
            start = k + 1;
        }
    /* strs[0] = CWD, then environment entries up to an empty string, then the options and the command. */
    int i = 1;
    while (i < n && strs[i][0] != '\0')
        i++;
    if (i >= n)
        fail("the job has no end to its environment", NULL, EINVAL);
    strs[i] = NULL;
    environ = strs + 1;
    struct options job_opts = {.ncgroups = 0, .uid = -1, .gid = -1, .as_kib = -1, .nproc = -1,
                               .control = -1, .node = -1};
    int dash = parse(strs, i + 1, n, &job_opts, "vpug");
    if (dash + 1 >= n)
        fail("no command after", "--", EINVAL);
    if (chdir(strs[0]) != 0)
        fail("cannot enter", strs[0], errno);
    become(&job_opts, strs + dash + 1);
}

int main(int argc, char **argv) {
    struct options o = {.ncgroups = 0, .uid = -1, .gid = -1, .as_kib = -1, .nproc = -1, .control = -1, .node = -1};
    int i = parse(argv, 1, argc, &o, "cvpugaP");
    if (o.control >= 0) {
        if (i != argc || o.node < 0 || o.as_kib >= 0 || o.nproc >= 0 || o.uid >= 0 || o.gid >= 0)
            fail("-a takes -P and -c only, and no command", NULL, EINVAL);
        armed(&o);
    }
    if (i + 1 >= argc)
        fail("no command after", "--", EINVAL);
    check_user(&o);
    join_all(&o);
    become(&o, argv + i + 1);
}
