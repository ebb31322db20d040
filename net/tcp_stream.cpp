#include "net/tcp_stream.hpp"

#include "net/detail/socket_ops.hpp"
#include "net/resolve.hpp"

#include <algorithm>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace tether::net {

task<result<tcp_stream>> tcp_stream::connect(address to) {
    if (!to.is_ip()) {
        co_return std::make_error_code(std::errc::invalid_argument);
    }
    if (std::error_code e = (co_await this_coro::context).err()) {
        co_return e; // sticky: no socket for a context that is already done
    }
    result<int> fd = detail::open_socket(to.native_family(), SOCK_STREAM);
    if (!fd) {
        co_return fd.error();
    }
    tcp_stream s(*fd);
    if (result<void> r = co_await detail::connect_awaiter(*fd, to); !r) {
        co_return r.error(); // s closes the socket
    }
    co_return std::move(s);
}

task<result<tcp_stream>> tcp_stream::connect(std::string host, std::uint16_t port) {
    result<std::vector<address>> addrs = co_await resolve(std::move(host), port);
    if (!addrs) {
        co_return addrs.error();
    }
    std::error_code last;
    for (const address& a : *addrs) {
        result<tcp_stream> s = co_await connect(a);
        if (s) {
            co_return std::move(*s);
        }
        last = s.error();
        if (last == errc::canceled || last == errc::deadline_exceeded) {
            break; // the context ended: the other addresses would fail the same way
        }
    }
    co_return last;
}

result<void> tcp_stream::set_nodelay(bool on) const noexcept {
    return detail::set_option(fd_, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
}

result<bool> tcp_stream::nodelay() const noexcept {
    result<int> v = detail::get_option(fd_, IPPROTO_TCP, TCP_NODELAY);
    if (!v) {
        return v.error();
    }
    return *v != 0;
}

result<void> tcp_stream::set_keepalive(bool on) const noexcept {
    return detail::set_option(fd_, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
}

result<void> tcp_stream::set_keepalive(std::chrono::seconds idle, std::chrono::seconds interval,
                                       int count) const noexcept {
    auto secs = [](std::chrono::seconds s) {
        return static_cast<int>(std::clamp<std::chrono::seconds::rep>(s.count(), 1, 32767));
    };
    struct opt {
        int level, name, value;
    };
    const opt opts[] = {{SOL_SOCKET, SO_KEEPALIVE, 1},
                        {IPPROTO_TCP, TCP_KEEPIDLE, secs(idle)},
                        {IPPROTO_TCP, TCP_KEEPINTVL, secs(interval)},
                        {IPPROTO_TCP, TCP_KEEPCNT, std::max(count, 1)}};
    for (const opt& o : opts) {
        if (result<void> r = detail::set_option(fd_, o.level, o.name, o.value); !r) {
            return r;
        }
    }
    return {};
}

result<bool> tcp_stream::keepalive() const noexcept {
    result<int> v = detail::get_option(fd_, SOL_SOCKET, SO_KEEPALIVE);
    if (!v) {
        return v.error();
    }
    return *v != 0;
}

} // namespace tether::net
