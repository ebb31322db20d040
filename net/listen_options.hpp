#pragma once
// listen_options: how tcp_listener and unix_listener set up their listening socket.

#include <sys/socket.h>

namespace tether::net {

/// Options for `tcp_listener::bind` and `unix_listener::bind`.
struct listen_options {
    /// SO_REUSEADDR: bind a port whose previous connections are still in TIME_WAIT (TCP).
    bool reuse_addr = true;
    /// SO_REUSEPORT: let several sockets (one per loop) bind the same port; the kernel
    /// spreads connections over them (TCP).
    bool reuse_port = false;
    /// The kernel's queue of connections not yet accepted (listen(2)); the kernel caps it
    /// at net.core.somaxconn. 0 still admits one connection on Linux.
    int backlog = SOMAXCONN;
};

} // namespace tether::net
