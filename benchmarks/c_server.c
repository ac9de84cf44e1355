/*
 * c_server.c: the physical limit that benchmarks/perf.py measures the Python servers
 * against: the same protocol (every byte back incremented by one mod 256, until the
 * client's EOF, then close) in one thread, with non-blocking sockets and one
 * level-triggered epoll loop, and nothing else.
 *
 *   c_server --unix PATH --tcp IPV4:PORT [--spin-us MICROSECONDS]
 *
 * Port 0 picks a free port.  Once both listeners accept, it prints one line on stdout,
 * "c server waiting on unix:PATH tcp:IPV4:PORT", with the real port.  SIGTERM or SIGINT
 * removes the socket file and exits 0.
 *
 * Each readable connection gets one read of up to CHUNK bytes, incremented in place and
 * written back.  What the kernel does not take at once is kept and the connection stops
 * being read until it is flushed, so a client that does not read its replies costs at
 * most one chunk, as in trio_sock.  An idle connection costs no user-space memory but
 * its slot in the table indexed by descriptor.
 *
 * While clients are active it polls without sleeping, for --spin-us (default 2000) after
 * the last event, and only then blocks in epoll_wait.  On this kind of machine (a VM) a
 * sleeping CPU takes tens of microseconds to wake, which a server doing two microseconds
 * of work per request pays on nearly every request, while a Python server is seldom
 * idle long enough to pay it: sleeping, this server measured the wake-up, not itself
 * (a quarter of its polling figure, or less, at one ping-pong client).
 * --spin-us 0 never polls: perf.py's c_nospin server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Trio's receive size, which trio_sock and the bare Trio server use too. */
#define CHUNK 65536
#define MAX_EVENTS 512
/* The kernel caps it at net.core.somaxconn, as it does Trio's 0xFFFF. */
#define BACKLOG 65535
/* See the top: long enough to bridge any gap between requests of a running benchmark,
 * short enough that an idle server costs nothing. */
#define DEFAULT_SPIN_US 2000

struct pending {
    uint8_t *buf; /* what the kernel has not taken yet, or NULL */
    uint32_t off, len;
};

static struct pending *pendings; /* indexed by descriptor */
static size_t npendings;
static uint8_t chunk[CHUNK];
static volatile sig_atomic_t stopping;
static int ep, unix_fd = -1, tcp_fd = -1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void die(const char *what) {
    fprintf(stderr, "c_server: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void watch(int fd, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl");
}

static void close_conn(int fd) {
    free(pendings[fd].buf);
    pendings[fd] = (struct pending){0};
    close(fd); /* also leaves the epoll set */
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* EAGAIN: all taken; EMFILE and the like: the queue waits for a free fd. */
            return;
        }
        if ((size_t)fd >= npendings) {
            close(fd);
            continue;
        }
        if (listener == tcp_fd) {
            /* As Trio and asyncio do: a small reply goes out at once. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        watch(fd, EPOLL_CTL_ADD, EPOLLIN);
    }
}

static void flush(int fd) {
    struct pending *p = &pendings[fd];
    while (p->off < p->len) {
        ssize_t n = send(fd, p->buf + p->off, p->len - p->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            close_conn(fd);
            return;
        }
        p->off += (uint32_t)n;
    }
    free(p->buf);
    *p = (struct pending){0};
    watch(fd, EPOLL_CTL_MOD, EPOLLIN); /* flushed: read again */
}

static void serve(int fd) {
    ssize_t n = read(fd, chunk, CHUNK);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        close_conn(fd); /* EOF, or a reset */
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        chunk[i]++;
    ssize_t sent = 0;
    while (sent < n) {
        ssize_t w = send(fd, chunk + sent, (size_t)(n - sent), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                close_conn(fd);
                return;
            }
            break;
        }
        sent += w;
    }
    if (sent == n)
        return;
    /* Keep the rest, and stop reading this client until the kernel takes it. */
    struct pending *p = &pendings[fd];
    p->len = (uint32_t)(n - sent);
    p->off = 0;
    p->buf = malloc(p->len);
    if (!p->buf)
        die("malloc");
    memcpy(p->buf, chunk + sent, p->len);
    watch(fd, EPOLL_CTL_MOD, EPOLLOUT);
}

static int listen_unix(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "c_server: Unix socket path too long: %s\n", path);
        exit(1);
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die(path);
    if (listen(fd, BACKLOG) < 0)
        die("listen");
    return fd;
}

static int listen_tcp(const char *spec, char *host, size_t host_size, unsigned *port) {
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= host_size) {
        fprintf(stderr, "c_server: --tcp must be IPV4:PORT, not %s\n", spec);
        exit(2);
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "c_server: not an IPv4 address: %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die(spec);
    if (listen(fd, BACKLOG) < 0)
        die("listen");
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        die("getsockname");
    *port = ntohs(addr.sin_port);
    return fd;
}

int main(int argc, char **argv) {
    const char *unix_path = NULL, *tcp_spec = NULL;
    long spin_us = DEFAULT_SPIN_US;
    bool bad = argc % 2 == 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--unix"))
            unix_path = argv[i + 1];
        else if (!strcmp(argv[i], "--tcp"))
            tcp_spec = argv[i + 1];
        else if (!strcmp(argv[i], "--spin-us"))
            spin_us = atol(argv[i + 1]);
        else
            bad = true;
    }
    if (bad || !unix_path || !tcp_spec || spin_us < 0) {
        fprintf(stderr, "usage: c_server --unix PATH --tcp IPV4:PORT [--spin-us MICROSECONDS]\n");
        return 2;
    }
    uint64_t spin_ns = (uint64_t)spin_us * 1000u;

    /* Every descriptor the limit allows: 15,000 idle clients need more than 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    npendings = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1u << 20) : rl.rlim_cur;
    pendings = calloc(npendings, sizeof *pendings); /* untouched pages cost no RSS */
    if (!pendings)
        die("calloc");

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    char host[64];
    unsigned port = 0;
    unix_fd = listen_unix(unix_path);
    tcp_fd = listen_tcp(tcp_spec, host, sizeof host, &port);
    watch(unix_fd, EPOLL_CTL_ADD, EPOLLIN);
    watch(tcp_fd, EPOLL_CTL_ADD, EPOLLIN);
    printf("c server waiting on unix:%s tcp:%s:%u\n", unix_path, host, port);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    uint64_t last_event = 0;
    while (!stopping) {
        bool spin = spin_ns && now_ns() - last_event < spin_ns;
        int n = epoll_wait(ep, events, MAX_EVENTS, spin ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (n > 0 && spin_ns)
            last_event = now_ns();
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == unix_fd || fd == tcp_fd)
                accept_all(fd);
            else if (pendings[fd].buf)
                flush(fd); /* only EPOLLOUT (or an error) is asked for while pending */
            else
                serve(fd);
        }
    }
    unlink(unix_path);
    return 0;
}
