/* canned_http.h: the minimal HTTP/1.1 side of the hand-written peers (raw_uring, raw_epoll,
 * asio_server). A request is whatever ends with an empty line; each one gets the same
 * "Hello, World!" response, so pipelined requests get one response each, in order. The
 * servers do not parse requests, which is a small advantage over tether, nginx and Go.
 * Header-only, C and C++. */
#ifndef TETHER_PEERS_CANNED_HTTP_H
#define TETHER_PEERS_CANNED_HTTP_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The response, rebuilt when the second changes (its Date header). */
struct canned_response {
    char bytes[256];
    size_t len;
    time_t second;
    const char* server;
};

static inline void canned_response_refresh(struct canned_response* r) {
    time_t now = time(NULL);
    if (now == r->second && r->len != 0) {
        return;
    }
    struct tm tm;
    gmtime_r(&now, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(r->bytes, sizeof r->bytes,
                     "HTTP/1.1 200 OK\r\nServer: %s\r\nDate: %s\r\n"
                     "Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!",
                     r->server, date);
    r->len = strlen(r->bytes);
    r->second = now;
}

/* Counts the requests that end in `data`: the "\r\n\r\n" sequences, carrying a partial match
 * across calls in `*state` (0..3 bytes of the terminator matched so far). */
static inline size_t count_requests(const char* data, size_t len, unsigned* state) {
    static const char end[4] = {'\r', '\n', '\r', '\n'};
    size_t n = 0;
    unsigned s = *state;
    for (size_t i = 0; i < len; ++i) {
        char c = data[i];
        if (c == end[s]) {
            if (++s == 4) {
                ++n;
                s = 0;
            }
        } else {
            s = c == '\r' ? 1 : 0;
        }
    }
    *state = s;
    return n;
}

#endif
