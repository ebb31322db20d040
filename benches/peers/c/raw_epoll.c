/* raw_epoll: the hand-written epoll server of tether's echo and HTTP benchmarks. One thread,
 * level-triggered epoll, nonblocking sockets: one recv per readable event into a shared
 * buffer, the answer sent at once, and EPOLLOUT asked for only when a socket is full.
 *
 *   raw_epoll echo PORT    echoes every byte back
 *   raw_epoll http PORT    answers every request (ended by an empty line) with Hello, World!
 *
 * Listens on 127.0.0.1:PORT. */
#define _GNU_SOURCE
#include "canned_http.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    unsigned http_state;
    char* pending; /* bytes the socket did not take yet */
    size_t pending_len;
    size_t pending_off;
};

static int ep;
static int http_mode;
static struct canned_response response = {.server = "raw-epoll"};
static char in[65536];
static char out[65536 * 2];

static void drop(struct conn* c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Sends `data`; keeps what the socket does not take and watches for EPOLLOUT. Returns 0 if
 * the connection failed. */
static int send_or_keep(struct conn* c, const char* data, size_t len) {
    if (c->pending_len != 0) {
        /* Still waiting for room: keep the order. */
        c->pending = realloc(c->pending, c->pending_len + len);
        memcpy(c->pending + c->pending_len, data, len);
        c->pending_len += len;
        return 1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            c->pending = realloc(c->pending, len - off);
            memcpy(c->pending, data + off, len - off);
            c->pending_len = len - off;
            c->pending_off = 0;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 1;
        } else {
            return 0;
        }
    }
    return 1;
}

static int on_writable(struct conn* c) {
    while (c->pending_off < c->pending_len) {
        ssize_t n = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->pending_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return 1;
        } else {
            return 0;
        }
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 1;
}

static int on_readable(struct conn* c) {
    ssize_t n = recv(c->fd, in, sizeof in, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return 1;
    }
    if (n <= 0) {
        return 0;
    }
    if (!http_mode) {
        return send_or_keep(c, in, (size_t)n);
    }
    size_t requests = count_requests(in, (size_t)n, &c->http_state);
    size_t len = 0;
    for (size_t i = 0; i < requests; ++i) {
        if (len + response.len > sizeof out) {
            if (!send_or_keep(c, out, len)) {
                return 0;
            }
            len = 0;
        }
        memcpy(out + len, response.bytes, response.len);
        len += response.len;
    }
    return len == 0 || send_or_keep(c, out, len);
}

int main(int argc, char** argv) {
    if (argc != 3 || (strcmp(argv[1], "echo") != 0 && strcmp(argv[1], "http") != 0)) {
        fprintf(stderr, "usage: raw_epoll {echo|http} PORT\n");
        return 2;
    }
    http_mode = strcmp(argv[1], "http") == 0;
    signal(SIGPIPE, SIG_IGN);
    canned_response_refresh(&response);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(argv[2])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr*)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        perror("raw_epoll: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);

    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (http_mode) {
            canned_response_refresh(&response);
        }
        for (int i = 0; i < n; ++i) {
            struct conn* c = evs[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        break; /* EAGAIN, or EMFILE until a connection closes */
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn* nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            uint32_t e = evs[i].events;
            if ((e & EPOLLOUT) && !on_writable(c)) {
                drop(c);
                continue;
            }
            if ((e & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !on_readable(c)) {
                drop(c);
            }
        }
    }
}
