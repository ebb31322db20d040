#pragma once
// Networking on io_uring: addresses, TCP, UDP and Unix-domain sockets.

#include "net/address.hpp"
#include "net/http/client.hpp"
#include "net/http/headers.hpp"
#include "net/http/middleware.hpp"
#include "net/http/parser.hpp"
#include "net/http/route.hpp"
#include "net/http/server.hpp"
#include "net/http/status.hpp"
#include "net/io_errc.hpp"
#include "net/io_result.hpp"
#include "net/listen_options.hpp"
#include "net/stream_socket.hpp"
#include "net/tcp_listener.hpp"
#include "net/tcp_stream.hpp"
#include "tether/runtime.hpp"
