/*
 * loadgen.c: the load generator of benchmarks/perf.py, in C so that it is never the
 * bottleneck: one thread, non-blocking sockets, one epoll loop that polls without ever
 * sleeping, no allocation per request.  perf.py compiles it with gcc -O2 into
 * benchmarks/bin/ and pins it to a CPU of its own, which it keeps busy.
 *
 *   loadgen --mode connect  --address ADDR [--concurrency 64]
 *   loadgen --mode pingpong --address ADDR [--concurrency 64] [--size 64]
 *   loadgen --mode stream   --address ADDR [--concurrency 1] [--size 262144]
 *   common: [--warmup 0.5] [--duration 2] [--sources 64] [--sleep] [--echo]
 *   ADDR: unix:PATH or tcp:IPV4:PORT
 *
 * connect:  each of --concurrency slots connects, sends one byte, reads its successor,
 *           closes, and starts again, as an HTTP/1.0 client does: one request is a
 *           whole connection.  The server still reads the EOF and closes its side (its
 *           CPU, not ours); this side does no more than it must, because on loopback
 *           TCP the handshake's work lands on the connecting side's CPU and would
 *           otherwise make the load generator, not the server, the limit.
 * pingpong: --concurrency persistent connections; each sends --size bytes, waits for the
 *           whole reply, and sends the next message; latency is send to last reply byte.
 * stream:   --concurrency connections that write --size-byte buffers as fast as the
 *           server takes them while reading the replies (full duplex, edge-triggered).
 *
 * Every reply byte is checked against its request, incremented mod 256 (or unchanged,
 * with --echo, for echo servers); a wrong byte
 * is a verification failure, printed on stderr and counted in the result, never just
 * a slower figure.  Only requests (or bytes) completed inside the window
 * [warmup, warmup + duration) are counted.  After the window every connection ends
 * gracefully (shutdown, the remaining replies read and checked, the server's EOF),
 * so servers see ordinary clients leaving, not resets.
 *
 * The result is one JSON object on stdout.  Exit status: 0 when nothing failed, 1 when
 * a reply was wrong or an I/O error occurred, 2 for a bad command line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
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

enum mode { MODE_CONNECT, MODE_PINGPONG, MODE_STREAM };

enum state {
    ST_RETRY,      /* connect mode: waiting to (re)connect */
    ST_CONNECTING, /* TCP connect in progress */
    ST_REPLY,      /* request sent, reading the reply */
    ST_EOF,        /* pingpong, stream: our side shut down, reading until the server's EOF */
    ST_DONE,       /* closed for good */
};

/* Stream mode's data repeats with this period: a prime, so that a reply shifted by any
 * amount short of a whole period (a lost or duplicated chunk) cannot match by chance. */
#define PERIOD 1048573u
/* Big enough that one read or write moves whatever the kernel has (loopback buffers
 * grow to a few MiB); at most PERIOD, so a window of the pattern is contiguous. */
#define IO_BUFFER (256u * 1024u)
#define MAX_EVENTS 256
/* The first few failures are kept for the report; the rest are only counted. */
#define MAX_MESSAGES 8
#define MESSAGE_SIZE 240
/* A server that refuses, resets or answers wrong this many times is down or broken:
 * stop rather than spin. */
#define MAX_ERRORS 100
/* After the window, how long in-flight requests and replies may take to finish. */
#define DRAIN_NS (10ull * 1000000000ull)

struct conn {
    int fd;
    enum state state;
    bool registered;   /* in the epoll set */
    bool want_out;     /* EPOLLOUT requested (a partial write is pending) */
    unsigned id;
    uint64_t seq;      /* requests started on this slot: every message differs */
    uint64_t started;  /* ns, when the current request began */
    uint8_t probe;     /* connect mode: the byte sent */
    size_t sent, got;  /* pingpong: bytes of the current message */
    uint64_t total_sent, total_got; /* stream: offsets into the pattern */
    uint8_t *msg;      /* pingpong: the message in flight */
};

static struct {
    enum mode mode;
    bool is_unix;
    char address[200];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned concurrency;
    size_t size;
    double warmup, duration;
    unsigned sources;
    bool sleep; /* --sleep: wait in epoll_wait rather than poll (sharing CPUs with servers) */
    uint8_t delta; /* what the server adds to each byte: 1 (increment), 0 with --echo */
} opt = {.concurrency = 0, .size = 0, .warmup = 0.5, .duration = 2.0, .sources = 64};

static int ep = -1;
static struct conn *conns;
static uint8_t *pattern, *expected; /* stream mode: 2 * PERIOD bytes each */
static uint8_t rbuf[IO_BUFFER];
static uint64_t t_warm, t_end, t_drain;
static unsigned next_source;

static uint64_t ops, bytes, verify_failures, io_errors, retries;
static uint64_t idle_ns; /* inside the window, polls that found nothing */
static uint32_t *lat; /* latencies in ns of the requests counted */
static size_t nlat, caplat;
static char messages[MAX_MESSAGES][MESSAGE_SIZE];
static unsigned nmessages;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Count a failure and keep the first few descriptions; those of verification failures
 * also go to stderr at once, so that a wrong byte is loud even if the JSON is never
 * read (and the total is repeated at the end). */
static void fail(uint64_t *counter, const char *fmt, ...) {
    char text[MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    (*counter)++;
    if (nmessages >= MAX_MESSAGES)
        return;
    if (counter == &verify_failures)
        fprintf(stderr, "loadgen: VERIFICATION FAILED: %s\n", text);
    {
        /* The JSON writer does no escaping: keep quotes and backslashes out. */
        for (char *p = text; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                *p = '\'';
        memcpy(messages[nmessages++], text, sizeof text);
    }
}

static bool counting(uint64_t now) { return now >= t_warm && now < t_end; }

static void record_latency(uint64_t ns) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            die("realloc");
    }
    lat[nlat++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/* Register, or change, what epoll reports for c; level-triggered except in stream mode. */
static void watch(struct conn *c, bool out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u32 = c->id};
    if (opt.mode == MODE_CONNECT && c->registered)
        return; /* edge-triggered for both directions from the start: no second call */
    if (opt.mode == MODE_STREAM || opt.mode == MODE_CONNECT)
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    if (epoll_ctl(ep, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->registered = true;
    c->want_out = out;
}

static void close_conn(struct conn *c, enum state next) {
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->registered = false;
    c->want_out = false;
    c->state = next;
}

static int new_socket(int flags) {
    int fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0)
        return -1;
    if (!opt.is_unix) {
        int one = 1;
        /* One byte on a fresh connection is never held back by Nagle: no call needed. */
        if (opt.mode != MODE_CONNECT)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (opt.sources > 1) {
            /* Each source address has its own ~28k ephemeral ports, and a closed
             * connection holds its port in TIME_WAIT for a minute: spreading over
             * 127.0.0.1..N keeps tens of thousands of connections a second going.
             * IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), per 4-tuple. */
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr = htonl(0x7f000001u + next_source++ % opt.sources);
            if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
                int saved = errno;
                close(fd);
                errno = saved;
                return -1;
            }
        }
    }
    return fd;
}

/* --- connect mode ------------------------------------------------------------------- */

static void send_probe(struct conn *c) {
    c->probe = (uint8_t)(c->seq * 7u + c->id);
    ssize_t n = write(c->fd, &c->probe, 1); /* an empty socket buffer: never blocks */
    if (n != 1) {
        fail(&io_errors, "connection %u: sending the byte: %s", c->id,
             n < 0 ? strerror(errno) : "short write");
        close_conn(c, ST_RETRY);
        return;
    }
    c->state = ST_REPLY;
    watch(c, false);
}

static void begin_connection(struct conn *c) {
    c->started = now_ns();
    c->fd = new_socket(SOCK_NONBLOCK);
    if (c->fd < 0) {
        fail(&io_errors, "socket: %s", strerror(errno));
        c->state = ST_RETRY;
        return;
    }
    if (connect(c->fd, (struct sockaddr *)&opt.addr, opt.addrlen) == 0) {
        send_probe(c); /* Unix sockets connect at once */
    } else if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
        watch(c, true);
    } else if (errno == EAGAIN) {
        /* A Unix listener's queue is full: the server is behind; try again shortly. */
        retries++;
        close_conn(c, ST_RETRY);
    } else {
        fail(&io_errors, "connect to %s: %s", opt.address, strerror(errno));
        close_conn(c, ST_RETRY);
    }
}

static void finish_request(struct conn *c, uint64_t now) {
    if (counting(now)) {
        ops++;
        record_latency(now - c->started);
    }
    c->seq++;
    close_conn(c, ST_RETRY);
    if (now < t_end)
        begin_connection(c);
    else
        c->state = ST_DONE;
}

static void connect_event(struct conn *c, uint32_t events) {
    if (c->state == ST_CONNECTING) {
        if (events & (EPOLLERR | EPOLLHUP)) { /* only then ask why: one call fewer */
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            fail(&io_errors, "connect to %s: %s", opt.address, strerror(err ? err : EPIPE));
            close_conn(c, ST_RETRY);
            return;
        }
        if (events & EPOLLOUT)
            send_probe(c);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return; /* the edge of becoming writable, while waiting for the reply */
    uint8_t buf[16];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        fail(&io_errors, "connection %u: read: %s", c->id, strerror(errno));
        close_conn(c, ST_RETRY);
        return;
    }
    if (c->state == ST_REPLY) {
        if (n == 0) {
            fail(&io_errors, "connection %u: the server closed before replying", c->id);
            close_conn(c, ST_RETRY);
        } else if (n != 1 || buf[0] != (uint8_t)(c->probe + opt.delta)) {
            fail(&verify_failures, "connect: sent 0x%02x, got %zd bytes starting 0x%02x",
                 c->probe, n, buf[0]);
            close_conn(c, ST_RETRY);
        } else {
            finish_request(c, now_ns());
        }
    }
}

/* --- persistent connections (pingpong, stream) -------------------------------------- */

static void open_persistent(struct conn *c) {
    /* Blocking connect, before the clock starts: a full Unix listen queue just waits. */
    c->fd = new_socket(0);
    if (c->fd < 0)
        die("socket");
    if (connect(c->fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0) {
        fprintf(stderr, "loadgen: connect to %s: %s\n", opt.address, strerror(errno));
        exit(1);
    }
    int flags = fcntl(c->fd, F_GETFL);
    if (flags < 0 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) < 0)
        die("fcntl");
}

/* Start a graceful end: no more requests; the server's EOF closes the connection. */
static void begin_shutdown(struct conn *c) {
    if (shutdown(c->fd, SHUT_WR) < 0) {
        fail(&io_errors, "connection %u: shutdown: %s", c->id, strerror(errno));
        close_conn(c, ST_DONE);
        return;
    }
    c->state = ST_EOF;
    if (opt.mode == MODE_PINGPONG && c->want_out)
        watch(c, false);
}

static void write_message(struct conn *c) {
    while (c->sent < opt.size) {
        ssize_t n = write(c->fd, c->msg + c->sent, opt.size - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->want_out)
                    watch(c, true);
                return;
            }
            if (errno == EINTR)
                continue;
            fail(&io_errors, "connection %u: write: %s", c->id, strerror(errno));
            close_conn(c, ST_DONE);
            return;
        }
        c->sent += (size_t)n;
    }
    if (c->want_out)
        watch(c, false);
}

static void send_message(struct conn *c) {
    /* A different message each time, so that a stale or misrouted reply cannot pass. */
    uint8_t base = (uint8_t)(c->seq * 131u + c->id * 17u);
    for (size_t i = 0; i < opt.size; i++)
        c->msg[i] = (uint8_t)(base + i);
    c->sent = c->got = 0;
    c->state = ST_REPLY;
    c->started = now_ns();
    write_message(c);
}

static void pingpong_event(struct conn *c, uint32_t events) {
    if ((events & EPOLLOUT) && c->state == ST_REPLY && c->sent < opt.size) {
        write_message(c);
        if (c->state == ST_DONE)
            return;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    /* Never read past the message: more bytes than were sent is for the next read to
     * find (and fail on), not for this one to swallow. */
    size_t want = c->state == ST_REPLY ? opt.size - c->got : sizeof rbuf;
    ssize_t n = read(c->fd, rbuf, want);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        fail(&io_errors, "connection %u: read: %s", c->id, strerror(errno));
        close_conn(c, ST_DONE);
        return;
    }
    if (c->state == ST_EOF) {
        if (n > 0)
            fail(&verify_failures, "pingpong: %zd bytes more than were sent", n);
        close_conn(c, ST_DONE);
        return;
    }
    if (n == 0) {
        fail(&io_errors, "connection %u: the server closed after %zu of %zu reply bytes",
             c->id, c->got, opt.size);
        close_conn(c, ST_DONE);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        uint8_t want_byte = (uint8_t)(c->msg[c->got + (size_t)i] + opt.delta);
        if (rbuf[i] != want_byte) {
            fail(&verify_failures, "pingpong: byte %zu of a reply: sent 0x%02x, got 0x%02x",
                 c->got + (size_t)i, c->msg[c->got + (size_t)i], rbuf[i]);
            close_conn(c, ST_DONE);
            return;
        }
    }
    c->got += (size_t)n;
    if (c->got < opt.size)
        return;
    uint64_t now = now_ns();
    if (counting(now)) {
        ops++;
        record_latency(now - c->started);
    }
    c->seq++;
    if (now < t_end)
        send_message(c);
    else
        begin_shutdown(c);
}

static void stream_write(struct conn *c) {
    while (c->state == ST_REPLY) {
        size_t off = (size_t)(c->total_sent % PERIOD);
        ssize_t n = write(c->fd, pattern + off, IO_BUFFER < opt.size ? IO_BUFFER : opt.size);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            fail(&io_errors, "connection %u: write: %s", c->id, strerror(errno));
            close_conn(c, ST_DONE);
            return;
        }
        c->total_sent += (uint64_t)n;
    }
}

static void stream_read(struct conn *c, uint64_t now) {
    for (;;) {
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            fail(&io_errors, "connection %u: read: %s", c->id, strerror(errno));
            close_conn(c, ST_DONE);
            return;
        }
        if (n == 0) {
            if (c->state != ST_EOF || c->total_got != c->total_sent)
                fail(&io_errors, "connection %u: the server closed after %llu of %llu bytes",
                     c->id, (unsigned long long)c->total_got,
                     (unsigned long long)c->total_sent);
            close_conn(c, ST_DONE);
            return;
        }
        size_t off = (size_t)(c->total_got % PERIOD);
        if (c->total_got + (uint64_t)n > c->total_sent ||
            memcmp(rbuf, expected + off, (size_t)n) != 0) {
            size_t i = 0;
            while (i < (size_t)n && rbuf[i] == expected[off + i])
                i++;
            if (c->total_got + i >= c->total_sent)
                fail(&verify_failures, "stream: more reply bytes than the %llu sent",
                     (unsigned long long)c->total_sent);
            else
                fail(&verify_failures, "stream: byte %llu: sent 0x%02x, got 0x%02x",
                     (unsigned long long)(c->total_got + i), pattern[off + i], rbuf[i]);
            close_conn(c, ST_DONE);
            return;
        }
        c->total_got += (uint64_t)n;
        if (counting(now))
            bytes += (uint64_t)n;
    }
}

static void stream_event(struct conn *c, uint32_t events) {
    /* Edge-triggered: each side is drained until EAGAIN, or its edge is lost. */
    if (events & EPOLLOUT)
        stream_write(c);
    if (c->state != ST_DONE && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        stream_read(c, now_ns());
}

/* --- command line, main loop, result ------------------------------------------------ */

static void usage(const char *why) {
    fprintf(stderr,
            "loadgen: %s\nusage: loadgen --mode connect|pingpong|stream --address "
            "unix:PATH|tcp:IPV4:PORT [--concurrency N] [--size BYTES] [--warmup S] "
            "[--duration S] [--sources N]\n",
            why);
    exit(2);
}

static void parse_address(const char *text) {
    snprintf(opt.address, sizeof opt.address, "%s", text);
    memset(&opt.addr, 0, sizeof opt.addr);
    if (strncmp(text, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&opt.addr;
        if (strlen(text + 5) >= sizeof un->sun_path)
            usage("Unix socket path too long");
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, text + 5);
        opt.addrlen = sizeof *un;
        opt.is_unix = true;
        return;
    }
    if (strncmp(text, "tcp:", 4) != 0)
        usage("the address must start with unix: or tcp:");
    char host[64];
    const char *colon = strrchr(text + 4, ':');
    if (!colon || (size_t)(colon - (text + 4)) >= sizeof host)
        usage("tcp address must be tcp:IPV4:PORT");
    memcpy(host, text + 4, (size_t)(colon - (text + 4)));
    host[colon - (text + 4)] = '\0';
    struct sockaddr_in *in = (struct sockaddr_in *)&opt.addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
        usage("tcp host must be an IPv4 address");
    opt.addrlen = sizeof *in;
}

static void parse_options(int argc, char **argv) {
    static const struct option longs[] = {
        {"mode", required_argument, 0, 'm'},     {"address", required_argument, 0, 'a'},
        {"concurrency", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"warmup", required_argument, 0, 'w'},   {"duration", required_argument, 0, 'd'},
        {"sources", required_argument, 0, 'S'},  {"sleep", no_argument, 0, 'z'},
        {"echo", no_argument, 0, 'e'},           {0, 0, 0, 0},
    };
    bool have_mode = false, have_address = false;
    opt.delta = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'm':
            have_mode = true;
            if (!strcmp(optarg, "connect"))
                opt.mode = MODE_CONNECT;
            else if (!strcmp(optarg, "pingpong"))
                opt.mode = MODE_PINGPONG;
            else if (!strcmp(optarg, "stream"))
                opt.mode = MODE_STREAM;
            else
                usage("unknown mode");
            break;
        case 'a':
            have_address = true;
            parse_address(optarg);
            break;
        case 'c':
            opt.concurrency = (unsigned)atoi(optarg);
            break;
        case 's':
            opt.size = (size_t)atol(optarg);
            break;
        case 'w':
            opt.warmup = atof(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'S':
            opt.sources = (unsigned)atoi(optarg);
            break;
        case 'z':
            opt.sleep = true;
            break;
        case 'e':
            opt.delta = 0;
            break;
        default:
            usage("bad option");
        }
    }
    if (!have_mode || !have_address)
        usage("--mode and --address are required");
    if (!opt.concurrency)
        opt.concurrency = opt.mode == MODE_STREAM ? 1 : 64;
    if (!opt.size)
        opt.size = opt.mode == MODE_STREAM ? IO_BUFFER : 64;
    if (opt.concurrency > 100000 || opt.size > PERIOD || opt.duration <= 0 || opt.warmup < 0 ||
        opt.sources < 1 || opt.sources > 60000)
        usage("a value is out of range");
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(double q) {
    /* Nearest rank on the sorted latencies. */
    size_t rank = (size_t)(q * (double)nlat + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > nlat)
        rank = nlat;
    return lat[rank - 1] / 1000.0;
}

static void print_result(double window_cpu, double window_wall, bool aborted, unsigned open) {
    const char *names[] = {"connect", "pingpong", "stream"};
    printf("{\"mode\": \"%s\", \"address\": \"%s\", \"concurrency\": %u, \"size\": %zu, "
           "\"warmup\": %.6f, \"seconds\": %.6f, \"ops\": %llu, \"bytes\": %llu, "
           "\"verify_failures\": %llu, \"errors\": %llu, \"retries\": %llu, "
           "\"still_open\": %u, \"aborted\": %s, \"cpu_fraction\": %.4f, "
           "\"busy_fraction\": %.4f",
           names[opt.mode], opt.address, opt.concurrency, opt.size, opt.warmup, opt.duration,
           (unsigned long long)ops, (unsigned long long)bytes,
           (unsigned long long)verify_failures, (unsigned long long)io_errors,
           (unsigned long long)retries, open, aborted ? "true" : "false",
           window_wall > 0 ? window_cpu / window_wall : 0.0,
           window_wall > 0 ? 1.0 - (double)idle_ns / 1e9 / window_wall : 0.0);
    if (nlat) {
        qsort(lat, nlat, sizeof *lat, compare_u32);
        double sum = 0;
        for (size_t i = 0; i < nlat; i++)
            sum += lat[i];
        printf(", \"latency_us\": {\"count\": %zu, \"mean\": %.2f, \"p50\": %.2f, \"p90\": %.2f, "
               "\"p99\": %.2f, \"p999\": %.2f, \"max\": %.2f}",
               nlat, sum / (double)nlat / 1000.0, percentile_us(0.5), percentile_us(0.9),
               percentile_us(0.99), percentile_us(0.999), lat[nlat - 1] / 1000.0);
    }
    printf(", \"messages\": [");
    for (unsigned i = 0; i < nmessages; i++)
        printf("%s\"%s\"", i ? ", " : "", messages[i]);
    printf("]}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    signal(SIGPIPE, SIG_IGN); /* a server that vanishes is an error to count, not a crash */
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    conns = calloc(opt.concurrency, sizeof *conns);
    if (!conns)
        die("calloc");
    if (opt.mode == MODE_STREAM) {
        /* Twice the period, so that any window of up to PERIOD bytes is contiguous. */
        pattern = malloc(2 * PERIOD);
        expected = malloc(2 * PERIOD);
        if (!pattern || !expected)
            die("malloc");
        uint32_t x = 2463534242u; /* xorshift32: every byte value, no short cycle */
        for (size_t i = 0; i < PERIOD; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            pattern[i] = pattern[i + PERIOD] = (uint8_t)x;
            expected[i] = expected[i + PERIOD] = (uint8_t)(x + opt.delta);
        }
    }
    for (unsigned i = 0; i < opt.concurrency; i++) {
        conns[i].fd = -1;
        conns[i].id = i;
        conns[i].state = ST_RETRY;
        if (opt.mode == MODE_PINGPONG && !(conns[i].msg = malloc(opt.size)))
            die("malloc");
        if (opt.mode != MODE_CONNECT)
            open_persistent(&conns[i]);
    }

    uint64_t start = now_ns();
    t_warm = start + (uint64_t)(opt.warmup * 1e9);
    t_end = t_warm + (uint64_t)(opt.duration * 1e9);
    t_drain = t_end + DRAIN_NS;
    for (unsigned i = 0; i < opt.concurrency; i++) {
        struct conn *c = &conns[i];
        if (opt.mode == MODE_CONNECT) {
            begin_connection(c);
        } else if (opt.mode == MODE_PINGPONG) {
            watch(c, false);
            send_message(c);
        } else {
            c->state = ST_REPLY;
            watch(c, true);
        }
    }

    bool warm_seen = false, end_seen = false, aborted = false;
    double cpu_warm = 0, cpu_end = 0;
    uint64_t wall_warm = 0, wall_end = 0;
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        uint64_t now = now_ns();
        if (!warm_seen && now >= t_warm) {
            warm_seen = true;
            wall_warm = now;
            cpu_warm = cpu_seconds();
        }
        if (!end_seen && now >= t_end) {
            end_seen = true;
            wall_end = now;
            cpu_end = cpu_seconds();
            if (opt.mode == MODE_STREAM)
                for (unsigned i = 0; i < opt.concurrency; i++)
                    if (conns[i].state == ST_REPLY)
                        begin_shutdown(&conns[i]);
        }
        if (io_errors + verify_failures >= MAX_ERRORS && !aborted) {
            /* The server is down or refusing: report that rather than spin. */
            aborted = true;
            for (unsigned i = 0; i < opt.concurrency; i++)
                close_conn(&conns[i], ST_DONE);
        }
        unsigned open = 0;
        for (unsigned i = 0; i < opt.concurrency; i++) {
            struct conn *c = &conns[i];
            if (c->state == ST_RETRY) {
                if (now < t_end && !aborted)
                    begin_connection(c);
                else
                    c->state = ST_DONE;
            }
            open += c->state != ST_DONE;
        }
        if (!open || now >= t_drain) {
            if (!end_seen) {
                wall_end = now;
                cpu_end = cpu_seconds();
            }
            if (open)
                fail(&io_errors, "%u connections still open %.0f s after the window", open,
                     DRAIN_NS / 1e9);
            print_result(cpu_end - cpu_warm, (double)(wall_end - wall_warm) / 1e9, aborted,
                         open);
            if (verify_failures)
                fprintf(stderr, "loadgen: VERIFICATION FAILED: %llu wrong replies in all\n",
                        (unsigned long long)verify_failures);
            return verify_failures || io_errors ? 1 : 0;
        }
        /* Poll without sleeping: waking a sleeping process on another CPU takes tens of
         * microseconds here (more under a hypervisor), which halved the C server's
         * figures when the load generator slept.  The CPU this burns is its own; how
         * much of it did real work is reported as busy_fraction.  With --sleep (when
         * the servers share its CPUs, as worker processes do) it waits, 1 ms at most. */
        int n = epoll_wait(ep, events, MAX_EVENTS, opt.sleep ? 1 : 0);
        if (n <= 0) {
            if (n < 0 && errno != EINTR)
                die("epoll_wait");
            if (counting(now))
                idle_ns += now_ns() - now;
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[events[i].data.u32];
            if (c->fd < 0 || c->state == ST_DONE || c->state == ST_RETRY)
                continue; /* closed earlier in this batch */
            if (opt.mode == MODE_CONNECT)
                connect_event(c, events[i].events);
            else if (opt.mode == MODE_PINGPONG)
                pingpong_event(c, events[i].events);
            else
                stream_event(c, events[i].events);
        }
    }
}
