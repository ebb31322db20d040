#include "net/unix_stream.hpp"

#include "net/detail/socket_ops.hpp"

#include <cerrno>
#include <sys/socket.h>

namespace tether::net {

task<result<unix_stream>> unix_stream::connect(address to) {
    if (to.family() != address_family::local) {
        co_return std::make_error_code(std::errc::invalid_argument);
    }
    if (std::error_code e = (co_await this_coro::context).err()) {
        co_return e;
    }
    result<int> fd = detail::open_socket(AF_UNIX, SOCK_STREAM);
    if (!fd) {
        co_return fd.error();
    }
    unix_stream s(*fd);
    if (result<void> r = co_await detail::connect_awaiter(*fd, to); !r) {
        co_return r.error();
    }
    co_return std::move(s);
}

result<std::pair<unix_stream, unix_stream>> unix_stream::pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
        return system_error_code(errno);
    }
    return std::pair{unix_stream(fds[0]), unix_stream(fds[1])};
}

} // namespace tether::net
