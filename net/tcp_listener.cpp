#include "net/tcp_listener.hpp"

#include "net/detail/socket_ops.hpp"

#include <algorithm>
#include <sys/socket.h>
#include <unistd.h>

namespace tether::net {

tcp_listener& tcp_listener::operator=(tcp_listener&& o) noexcept {
    if (this != &o) {
        close();
        acc_ = std::exchange(o.acc_, nullptr);
    }
    return *this;
}

result<tcp_listener> tcp_listener::bind(const address& at) {
    return bind(at, listen_options{});
}

result<tcp_listener> tcp_listener::bind(const address& at, const listen_options& opts) {
    if (!at.is_ip()) {
        return std::make_error_code(std::errc::invalid_argument);
    }
    result<int> fd = detail::open_socket(at.native_family(), SOCK_STREAM);
    if (!fd) {
        return fd.error();
    }
    auto fail = [&](std::error_code e) {
        ::close(*fd);
        return e;
    };
    if (opts.reuse_addr) {
        if (auto r = detail::set_option(*fd, SOL_SOCKET, SO_REUSEADDR, 1); !r) {
            return fail(r.error());
        }
    }
    if (opts.reuse_port) {
        if (auto r = detail::set_option(*fd, SOL_SOCKET, SO_REUSEPORT, 1); !r) {
            return fail(r.error());
        }
    }
    if (auto r = detail::bind_socket(*fd, at); !r) {
        return r.error(); // bind_socket closed it
    }
    if (::listen(*fd, opts.backlog) < 0) {
        return fail(system_error_code(errno));
    }
    std::string name = at.to_string();
    if (auto local = detail::local_address(*fd)) {
        name = local->to_string();
    }
    return tcp_listener(detail::acceptor_open(*fd, std::move(name)));
}

result<std::vector<tcp_listener>> tcp_listener::bind_group(const address& at, std::size_t n,
                                                           listen_options opts) {
    opts.reuse_port = true;
    std::vector<tcp_listener> group;
    group.reserve(n == 0 ? 1 : n);
    address where = at;
    for (std::size_t i = 0; i < std::max<std::size_t>(n, 1); ++i) {
        result<tcp_listener> l = bind(where, opts);
        if (!l) {
            return l.error(); // the ones bound so far close with `group`
        }
        if (i == 0) {
            result<address> local = l->local_addr(); // the port the kernel chose, if 0
            if (!local) {
                return local.error();
            }
            where = *local;
        }
        group.push_back(std::move(*l));
    }
    return group;
}

result<address> tcp_listener::local_addr() const noexcept {
    return detail::local_address(detail::acceptor_fd(acc_));
}

void tcp_listener::close() noexcept {
    detail::acceptor_close(std::exchange(acc_, nullptr));
}

} // namespace tether::net
