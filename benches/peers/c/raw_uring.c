/* raw_uring: the hand-written io_uring server that marks the limit for tether's echo and HTTP
 * benchmarks. One thread, one ring created with SINGLE_ISSUER|DEFER_TASKRUN (completions run
 * on this thread when it asks for them, not in the softirq of the other CPU), one multishot
 * accept, one multishot recv per connection drawing from a provided buffer ring (an idle
 * connection holds no receive buffer), and one io_uring_submit_and_wait per batch of
 * completions.
 *
 *   raw_uring echo PORT    echoes every byte back
 *   raw_uring http PORT    answers every request (ended by an empty line) with Hello, World!
 *
 * Listens on 127.0.0.1:PORT. Echo sends straight from the provided buffer when no send is in
 * flight on the connection (no copy); otherwise, and for HTTP, bytes are queued in the
 * connection's buffer and sent in one send when the one in flight completes, so a
 * connection's bytes stay in order. */
#define _GNU_SOURCE
#include "canned_http.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_MASK = 3 };
enum { BUF_GROUP = 7, BUF_COUNT = 4096, BUF_SIZE = 4096 };

struct buffer {
    char* data;
    size_t len;
    size_t cap;
};

struct conn {
    int fd;
    int ops;      /* recv armed + send in flight: the conn is freed when 0 and closing */
    int closing;  /* the peer is gone: no more recv; close once the send in flight ends */
    int sending;  /* a send is in flight */
    int send_bid; /* the provided buffer being sent from, or -1 */
    const char* send_ptr;
    size_t send_len;
    size_t send_off;
    struct buffer inflight; /* what is being sent when send_bid < 0 */
    struct buffer queued;   /* bytes waiting for the send in flight to end */
    unsigned http_state;
};

static struct io_uring ring;
static struct io_uring_buf_ring* buf_ring;
static char* buf_base;
static int recycled; /* buffers added to the ring since the last advance */
static int http_mode;
static int listen_fd;
static struct canned_response response = {.server = "raw-uring"};

static void die(const char* what, int err) {
    fprintf(stderr, "raw_uring: %s: %s\n", what, strerror(err));
    exit(1);
}

static struct io_uring_sqe* get_sqe(void) {
    struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    while (sqe == NULL) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void recycle(int bid) {
    io_uring_buf_ring_add(buf_ring, buf_base + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), recycled);
    ++recycled;
}

static void append(struct buffer* b, const char* data, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 512;
        while (cap < b->len + len) {
            cap *= 2;
        }
        b->data = realloc(b->data, cap);
        if (b->data == NULL) {
            die("realloc", ENOMEM);
        }
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void arm_accept(void) {
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
}

static void arm_recv(struct conn* c) {
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_RECV);
    ++c->ops;
}

static void submit_send(struct conn* c) {
    struct io_uring_sqe* sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, c->send_ptr + c->send_off, c->send_len - c->send_off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_SEND);
    c->sending = 1;
    ++c->ops;
}

/* Starts sending the queued bytes, if any and if no send is in flight. */
static void flush_queued(struct conn* c) {
    if (c->sending || c->queued.len == 0) {
        return;
    }
    struct buffer t = c->inflight;
    c->inflight = c->queued;
    c->queued = t;
    c->queued.len = 0;
    c->send_bid = -1;
    c->send_ptr = c->inflight.data;
    c->send_len = c->inflight.len;
    c->send_off = 0;
    submit_send(c);
}

static void release(struct conn* c) {
    if (c->ops != 0 || !c->closing) {
        return;
    }
    close(c->fd);
    free(c->inflight.data);
    free(c->queued.data);
    free(c);
}

static void on_accept(struct io_uring_cqe* cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        arm_accept(); /* the multishot accept ended (an error such as EMFILE): re-arm */
    }
    if (cqe->res < 0) {
        return;
    }
    struct conn* c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(cqe->res);
        return;
    }
    c->fd = cqe->res;
    c->send_bid = -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    arm_recv(c);
}

static void on_recv(struct conn* c, struct io_uring_cqe* cqe) {
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more) {
        --c->ops;
    }
    if (cqe->res <= 0) {
        if (cqe->res == -ENOBUFS && !c->closing) {
            /* The ring ran dry; the buffers of this batch come back before the next wait. */
            if (!more) {
                arm_recv(c);
            }
            return;
        }
        c->closing = 1; /* EOF or an error */
        if (c->sending) {
            /* Wake the send if it is stuck; its completion frees the conn. */
            shutdown(c->fd, SHUT_RDWR);
        }
        release(c);
        return;
    }
    int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    const char* data = buf_base + (size_t)bid * BUF_SIZE;
    size_t len = (size_t)cqe->res;
    if (c->closing) {
        recycle(bid);
    } else if (http_mode) {
        size_t n = count_requests(data, len, &c->http_state);
        recycle(bid);
        for (size_t i = 0; i < n; ++i) {
            append(&c->queued, response.bytes, response.len);
        }
        flush_queued(c);
    } else if (!c->sending) {
        c->send_bid = bid; /* send from the provided buffer; recycled when the send ends */
        c->send_ptr = data;
        c->send_len = len;
        c->send_off = 0;
        submit_send(c);
    } else {
        append(&c->queued, data, len);
        recycle(bid);
    }
    if (c->closing) {
        release(c);
    } else if (!more) {
        arm_recv(c);
    }
}

static void on_send(struct conn* c, struct io_uring_cqe* cqe) {
    --c->ops;
    c->sending = 0;
    if (cqe->res < 0 || c->closing) {
        if (c->send_bid >= 0) {
            recycle(c->send_bid);
            c->send_bid = -1;
        }
        if (!c->closing) {
            c->closing = 1;
            shutdown(c->fd, SHUT_RDWR); /* ends the multishot recv */
        }
        release(c);
        return;
    }
    c->send_off += (size_t)cqe->res;
    if (c->send_off < c->send_len) {
        submit_send(c); /* a short send: the rest */
        return;
    }
    if (c->send_bid >= 0) {
        recycle(c->send_bid);
        c->send_bid = -1;
    }
    flush_queued(c);
}

int main(int argc, char** argv) {
    if (argc != 3 || (strcmp(argv[1], "echo") != 0 && strcmp(argv[1], "http") != 0)) {
        fprintf(stderr, "usage: raw_uring {echo|http} PORT\n");
        return 2;
    }
    http_mode = strcmp(argv[1], "http") == 0;
    signal(SIGPIPE, SIG_IGN);
    canned_response_refresh(&response);

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(argv[2])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listen_fd, (struct sockaddr*)&sa, sizeof sa) < 0 || listen(listen_fd, 4096) < 0) {
        die("listen", errno);
    }

    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = 16384;
    p.flags |= IORING_SETUP_CQSIZE;
    int err = io_uring_queue_init_params(4096, &ring, &p);
    if (err < 0) {
        /* Kernels before 6.1: the plain setup (slower, see the README of benches/peers). */
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 16384;
        err = io_uring_queue_init_params(4096, &ring, &p);
        if (err < 0) {
            die("io_uring_queue_init", -err);
        }
        fprintf(stderr, "raw_uring: no SINGLE_ISSUER|DEFER_TASKRUN on this kernel\n");
    }

    size_t ring_bytes = BUF_COUNT * sizeof(struct io_uring_buf);
    buf_ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    buf_base = mmap(NULL, (size_t)BUF_COUNT * BUF_SIZE, PROT_READ | PROT_WRITE,
                    MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (buf_ring == MAP_FAILED || buf_base == MAP_FAILED) {
        die("mmap", errno);
    }
    io_uring_buf_ring_init(buf_ring);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)buf_ring, .ring_entries = BUF_COUNT, .bgid = BUF_GROUP};
    if ((err = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
        die("io_uring_register_buf_ring", -err);
    }
    for (int i = 0; i < BUF_COUNT; ++i) {
        recycle(i);
    }
    io_uring_buf_ring_advance(buf_ring, recycled);
    recycled = 0;

    arm_accept();
    for (;;) {
        err = io_uring_submit_and_wait(&ring, 1);
        if (err < 0 && err != -EINTR && err != -EAGAIN && err != -EBUSY) {
            die("io_uring_submit_and_wait", -err);
        }
        if (http_mode) {
            canned_response_refresh(&response);
        }
        struct io_uring_cqe* cqe;
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            ++seen;
            uint64_t ud = cqe->user_data;
            struct conn* c = (struct conn*)(uintptr_t)(ud & ~(uint64_t)OP_MASK);
            switch (ud & OP_MASK) {
            case OP_ACCEPT: on_accept(cqe); break;
            case OP_RECV: on_recv(c, cqe); break;
            case OP_SEND: on_send(c, cqe); break;
            }
        }
        io_uring_cq_advance(&ring, seen);
        if (recycled != 0) {
            io_uring_buf_ring_advance(buf_ring, recycled);
            recycled = 0;
        }
    }
}
