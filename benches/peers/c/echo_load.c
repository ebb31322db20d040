/* echo_load: the echo benchmarks' load client, independent of tether (plain epoll, one thread),
 * so that every server is driven by the same code.
 *
 *   echo_load -p PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-w WARMUP_SECONDS]
 *       CONNS connections (64), each sending SIZE bytes (64) and waiting for the whole echo,
 *       verified byte for byte, before sending again (closed loop). Runs WARMUP unmeasured,
 *       then SECONDS measured, and prints one line:
 *         rps=R p50_us=X p99_us=Y samples=N errors=E
 *       errors counts connections that failed to connect, died, or echoed wrong bytes.
 *   echo_load -p PORT -i N
 *       Opens N connections, makes one SIZE-byte round trip on each, prints "idle=OK" (how
 *       many worked) and keeps them open until its stdin ends: the idle-memory case.
 *
 * Connects to 127.0.0.1 only. Latency goes into a log-linear histogram (64 buckets per power
 * of two, about 1.6 % wide). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { SUB = 64, BUCKETS = 64 * SUB };

static uint64_t hist[BUCKETS];
static uint64_t samples;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int bucket_of(uint64_t v) {
    if (v < SUB) {
        return (int)v;
    }
    int top = 63 - __builtin_clzll(v); /* >= 6 */
    int shift = top - 6;
    return (shift + 1) * SUB + (int)((v >> shift) & (SUB - 1));
}

static double bucket_value(int b) {
    if (b < SUB) {
        return b;
    }
    int shift = b / SUB - 1;
    double low = (double)((uint64_t)(SUB + b % SUB) << shift);
    return low + (double)((uint64_t)1 << shift) / 2;
}

static double percentile(double q) {
    if (samples == 0) {
        return 0;
    }
    uint64_t want = (uint64_t)(q * (double)samples);
    uint64_t seen = 0;
    for (int b = 0; b < BUCKETS; ++b) {
        seen += hist[b];
        if (seen > want) {
            return bucket_value(b);
        }
    }
    return 0;
}

struct conn {
    int fd;
    int alive;
    size_t sent;
    size_t got;
    uint64_t started;
    char* in;
};

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr*)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static const char* message;
static size_t size = 64;
static int ep;
static uint64_t errors;

static void watch(struct conn* c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void fail(struct conn* c) {
    c->alive = 0;
    ++errors;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
}

/* Sends what is left of the message; waits for EPOLLOUT if the socket is full. */
static void push(struct conn* c) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, message + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            watch(c, EPOLLIN | EPOLLOUT);
            return;
        } else {
            fail(c);
            return;
        }
    }
}

static int idle_mode(int port, int n) {
    char back[65536];
    int ok = 0;
    for (int i = 0; i < n; ++i) {
        int fd = connect_to(port);
        if (fd < 0) {
            break;
        }
        if (send(fd, message, size, MSG_NOSIGNAL) == (ssize_t)size &&
            recv(fd, back, size, MSG_WAITALL) == (ssize_t)size) {
            ++ok;
        }
    }
    printf("idle=%d\n", ok);
    fflush(stdout);
    char line[16];
    while (read(STDIN_FILENO, line, sizeof line) > 0) {
    }
    return 0;
}

int main(int argc, char** argv) {
    int port = 0;
    int nconns = 64;
    int idle = -1;
    double seconds = 5;
    double warmup = 1;
    int opt;
    while ((opt = getopt(argc, argv, "p:c:s:d:w:i:H:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'i': idle = atoi(optarg); break;
        case 'H':
            if (strcmp(optarg, "127.0.0.1") != 0) {
                fprintf(stderr, "echo_load: 127.0.0.1 only\n");
                return 2;
            }
            break;
        default:
            fprintf(stderr, "usage: echo_load -p PORT [-c CONNS] [-s SIZE] [-d SECONDS] "
                            "[-w WARMUP] | -p PORT -i N\n");
            return 2;
        }
    }
    if (port <= 0 || nconns <= 0 || size == 0 || size > 65536) {
        fprintf(stderr, "echo_load: need -p PORT, CONNS > 0 and 0 < SIZE <= 65536\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char* msg = malloc(size);
    for (size_t i = 0; i < size; ++i) {
        msg[i] = (char)('a' + (i * 7 + i / 26) % 26);
    }
    message = msg;
    if (idle >= 0) {
        return idle_mode(port, idle);
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn* conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; ++i) {
        struct conn* c = &conns[i];
        c->fd = connect_to(port);
        if (c->fd < 0) {
            ++errors;
            continue;
        }
        c->alive = 1;
        c->in = malloc(size);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    uint64_t start = now_ns();
    uint64_t from = start + (uint64_t)(warmup * 1e9);
    uint64_t end = from + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < nconns; ++i) {
        if (conns[i].alive) {
            conns[i].started = start;
            push(&conns[i]);
        }
    }
    struct epoll_event evs[512];
    uint64_t t = start;
    while (t < end) {
        int n = epoll_wait(ep, evs, 512, 100);
        t = now_ns();
        for (int i = 0; i < n; ++i) {
            struct conn* c = evs[i].data.ptr;
            if (!c->alive) {
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                watch(c, EPOLLIN);
                push(c);
                if (!c->alive) {
                    continue;
                }
            }
            for (;;) {
                ssize_t r = recv(c->fd, c->in + c->got, size - c->got, 0);
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                if (r < 0 && errno == EAGAIN) {
                    break;
                }
                if (r <= 0) {
                    fail(c);
                    break;
                }
                c->got += (size_t)r;
                if (c->got < size) {
                    continue;
                }
                if (c->sent < size || memcmp(c->in, message, size) != 0) {
                    fail(c); /* bytes we did not send */
                    break;
                }
                if (t >= from) {
                    ++hist[bucket_of(t - c->started)];
                    ++samples;
                }
                c->got = 0;
                c->sent = 0;
                c->started = t;
                push(c);
                break;
            }
        }
    }
    double measured = (double)(now_ns() - from) / 1e9;
    if (measured <= 0) {
        measured = seconds;
    }
    printf("rps=%.0f p50_us=%.1f p99_us=%.1f samples=%llu errors=%llu\n",
           (double)samples / measured, percentile(0.50) / 1000, percentile(0.99) / 1000,
           (unsigned long long)samples, (unsigned long long)errors);
    return 0;
}
