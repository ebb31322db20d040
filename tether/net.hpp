#pragma once
// Networking on io_uring: addresses, TCP, UDP and Unix-domain sockets.

#include "net/address.hpp"
#include "net/io_errc.hpp"
#include "net/io_result.hpp"
#include "net/listen_options.hpp"
#include "net/stream_socket.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "tether/runtime.hpp"
