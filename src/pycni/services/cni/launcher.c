/* The compiled thin launcher: what the runtime execs in service mode, where a C compiler was found at
 * install time. It does what client.py's _ask_daemon does (the same wire format, see __init__.py), in
 * about a millisecond instead of the ~10 ms a Python interpreter takes to start.
 *
 * With a Python launcher behind it (PYCNI_FALLBACK, a path), every case it does not serve goes there, with
 * stdin given back:
 *   - no service answers, or it declines (another wire protocol, PYCNI_DECLINED): the Python launcher runs
 *     the plugin itself;
 *   - the service took an ADD and went away before answering: the Python launcher answers with error 11
 *     (PYCNI_SERVICE_DIED), so that the ADD never runs twice;
 *   - a terminal and no CNI_COMMAND: the Python launcher prints the plugin's usage.
 * Static (PYCNI_FALLBACK empty: the image's launchers, linked with -static for nodes with no Python):
 *   - no service answers: it tries again for PYCNI_SERVICE_WAIT seconds (a restarting service container),
 *     then answers CNI error 11, "try again later", naming the socket; the kubelet retries the sandbox;
 *   - the service declines, or goes away after taking the request: error 11 at once (never a second ADD).
 * `pycni install` compiles it once per plugin type with PYCNI_TYPE, PYCNI_VERSION, PYCNI_PROTOCOL,
 * PYCNI_SOCKET, PYCNI_FALLBACK and PYCNI_MARKER defined (strings), and PYCNI_DECLINED, PYCNI_CALL_TIMEOUT
 * and PYCNI_SERVICE_WAIT (numbers): every constant it shares with the Python side comes from there. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* `pycni uninstall` and the bridge's in-process IPAM recognise a launcher by this line. */
__attribute__((used)) static const char marker[] = "\n" PYCNI_MARKER "\n";

struct buffer {
    char *data;
    size_t len, cap;
};

static void append(struct buffer *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown)
            exit(70);
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static struct buffer input;
static int stdin_read;

static void read_stdin(void) {
    char chunk[65536];
    stdin_read = 1;
    for (;;) {
        ssize_t n = read(0, chunk, sizeof chunk);
        if (n > 0)
            append(&input, chunk, (size_t)n);
        else if (n == 0 || errno != EINTR)
            return;
    }
}

static void write_all(int fd, const char *data, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        done += (size_t)n;
    }
}

/* The request's cniVersion, for the error's own (the spec wants them equal); 1.0.0 when it has none. */
static const char *request_version(void) {
    static char version[16] = "1.0.0";
    const char *key = input.data ? memmem(input.data, input.len, "\"cniVersion\"", 12) : NULL;
    if (!key)
        return version;
    const char *p = key + 12, *end = input.data + input.len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':'))
        p++;
    if (p >= end || *p != '"')
        return version;
    size_t n = 0;
    for (p++; p < end && n + 1 < sizeof version && ((*p >= '0' && *p <= '9') || *p == '.'); p++)
        version[n++] = *p;
    if (p < end && *p == '"' && n > 0)
        version[n] = 0;
    else
        strcpy(version, "1.0.0");
    return version;
}

/* Static: the error a runtime retries on, with what the node's operator needs to look at. */
static void try_again_later(const char *msg, const char *why) {
    printf("{\n  \"cniVersion\": \"%s\",\n  \"code\": 11,\n  \"msg\": \"%s\",\n"
           "  \"details\": \"%s; the pycni service (the pycni DaemonSet's service container) listens on %s\"\n}\n",
           request_version(), msg, why, PYCNI_SOCKET);
    exit(1);
}

/* Run the Python launcher in this process, with what was read from stdin given back as its stdin. */
static void fallback(const char *flag) {
    int fd = stdin_read ? memfd_create("pycni-stdin", 0) : -1;  /* unread (a terminal): left as it is */
    if (fd >= 0) {
        write_all(fd, input.data, input.len);
        lseek(fd, 0, SEEK_SET);
        dup2(fd, 0);
        close(fd);
    }
    if (!*PYCNI_FALLBACK) {
        if (!stdin_read) {
            printf("pycni %s %s: a static launcher; the pycni service on %s runs the plugin for it "
                   "(CNI_COMMAND and the network config on stdin, as a container runtime calls it)\n",
                   PYCNI_TYPE, PYCNI_VERSION, PYCNI_SOCKET);
            exit(0);
        }
        try_again_later("pycni service went away during the call",
                        "it took the request and closed the connection without an answer: not sent again");
    }
    setenv("PYCNI_NO_DAEMON", "1", 1);
    if (flag)
        setenv(flag, "1", 1);
    char *argv[] = {(char *)PYCNI_FALLBACK, NULL};
    execv(PYCNI_FALLBACK, argv);
    printf("{\n  \"cniVersion\": \"1.0.0\",\n  \"code\": 999,\n  \"msg\": \"pycni launcher: cannot run %s: %s\"\n}\n",
           PYCNI_FALLBACK, strerror(errno));
    exit(1);
}

static int wanted(const char *entry) {
    return strncmp(entry, "CNI_", 4) == 0 || strncmp(entry, "PYCNI_DEBUG=", 12) == 0;
}

static int send_all(int sock, const char *data, size_t len, int *fds, int nfds) {
    size_t done = 0;
    while (done < len) {
        struct iovec iov = {.iov_base = (char *)data + done, .iov_len = len - done};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        char control[CMSG_SPACE(sizeof(int) * 3)];
        if (done == 0) {  /* the descriptors travel with the first bytes */
            memset(control, 0, sizeof control);
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
            struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
            memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
        }
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* A case the Python launcher behind would run itself; a static launcher answers error 11 instead. */
static void unserved(const char *msg, const char *why) {
    if (*PYCNI_FALLBACK)
        fallback(NULL);
    try_again_later(msg, why);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Static: connect again every 100 ms for PYCNI_SERVICE_WAIT seconds; nothing was sent, so nothing runs twice. */
static void wait_for_service(int sock, struct sockaddr_un *addr) {
    double deadline = now() + PYCNI_SERVICE_WAIT;
    int error = errno;
    while (now() < deadline) {
        struct timespec pause = {.tv_nsec = 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
        if (connect(sock, (struct sockaddr *)addr, sizeof *addr) == 0)
            return;
        error = errno;
    }
    char why[160];
    snprintf(why, sizeof why, "no answer on its socket for %d s (%s)", PYCNI_SERVICE_WAIT, strerror(error));
    try_again_later("pycni service not running", why);
}

int main(void) {
    const char *command = getenv("CNI_COMMAND");
    if ((!command || !*command) && isatty(0))
        fallback(NULL);
    read_stdin();
    if (getenv("PYCNI_NO_DAEMON") && *PYCNI_FALLBACK)
        fallback(NULL);

    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (sock < 0 || strlen(PYCNI_SOCKET) >= sizeof addr.sun_path)
        unserved("pycni launcher cannot make a unix socket", strerror(errno));
    strcpy(addr.sun_path, PYCNI_SOCKET);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (*PYCNI_FALLBACK)
            fallback(NULL);
        wait_for_service(sock, &addr);
    }

    int fds[3], nfds = 0;
    fds[nfds] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fds[nfds] >= 0)
        nfds++;
    fds[nfds] = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fds[nfds] >= 0)
        nfds++;
    if (nfds != 2)
        unserved("pycni launcher cannot open its own network namespace and root", strerror(errno));
    const char *netns = getenv("CNI_NETNS");
    if (netns && *netns) {
        fds[nfds] = open(netns, O_RDONLY | O_CLOEXEC);
        if (fds[nfds] >= 0)
            nfds++;
    }

    struct buffer request = {0};
    static const char zero = 0;
    append(&request, "\0\0\0\0", 4);  /* the length, filled in below */
    append(&request, PYCNI_PROTOCOL, strlen(PYCNI_PROTOCOL) + 1);
    append(&request, PYCNI_VERSION, strlen(PYCNI_VERSION) + 1);
    append(&request, PYCNI_TYPE, strlen(PYCNI_TYPE) + 1);
    for (char **entry = environ; *entry; entry++)
        if (wanted(*entry))
            append(&request, *entry, strlen(*entry) + 1);
    append(&request, &zero, 1);
    append(&request, input.data ? input.data : "", input.len);
    uint32_t body = (uint32_t)(request.len - 4);
    request.data[0] = (char)(body >> 24);
    request.data[1] = (char)(body >> 16);
    request.data[2] = (char)(body >> 8);
    request.data[3] = (char)body;

    struct timeval timeout = {.tv_sec = PYCNI_CALL_TIMEOUT};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    int sent = send_all(sock, request.data, request.len, fds, nfds) == 0;
    for (int i = 0; i < nfds; i++)
        close(fds[i]);

    struct buffer reply = {0};
    if (sent) {
        char chunk[65536];
        for (;;) {
            ssize_t n = recv(sock, chunk, sizeof chunk, 0);
            if (n > 0)
                append(&reply, chunk, (size_t)n);
            else if (n == 0 || errno != EINTR)
                break;
        }
    }
    close(sock);
    if (reply.len > 0 && (unsigned char)reply.data[0] != PYCNI_DECLINED) {
        write_all(1, reply.data + 1, reply.len - 1);
        return (unsigned char)reply.data[0];
    }
    if (sent && reply.len == 0 && command && strcmp(command, "ADD") == 0)
        fallback("PYCNI_SERVICE_DIED");
    if (reply.len > 0)
        unserved("pycni service declined the call", "it speaks another wire protocol than this launcher's "
                 PYCNI_PROTOCOL " (a node mid-upgrade: launchers and service of different pycni releases)");
    unserved("pycni service went away during the call", sent ? "it closed the connection without an answer"
                                                               : "the request could not be sent");
    return 1;
}
