#include "net/resolve.hpp"

#include "runtime/offload.hpp"

#include <cerrno>
#include <netdb.h>
#include <string>
#include <sys/socket.h>

namespace tether::net {

namespace {

class resolve_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tether.resolve"; }
    std::string message(int v) const override { return ::gai_strerror(v); }
};

// What getaddrinfo found, or its error (a resolve_category code or a system one).
struct lookup {
    std::vector<address> addrs;
    std::error_code error;
};

// Runs on the offload pool: blocking, owns its arguments.
lookup getaddrinfo_blocking(std::string host, std::uint16_t port, int family) {
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM; // one entry per address, not one per socket type
    hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    lookup out;
    int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
    if (rc == EAI_SYSTEM) {
        out.error = system_error_code(errno);
        return out;
    }
    if (rc != 0) {
        out.error = std::error_code(rc, resolve_category());
        return out;
    }
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        if (auto a = address::from_sockaddr(ai->ai_addr, ai->ai_addrlen)) {
            out.addrs.push_back(*a);
        }
    }
    ::freeaddrinfo(res);
    return out;
}

} // namespace

const std::error_category& resolve_category() noexcept {
    static const resolve_category_impl c;
    return c;
}

task<result<std::vector<address>>> resolve(std::string host, std::uint16_t port,
                                           address_family family) {
    if (host.empty() || family == address_family::local) {
        co_return std::make_error_code(std::errc::invalid_argument);
    }
    if (std::error_code e = (co_await this_coro::context).err()) {
        co_return e;
    }
    // Literals need no lookup (a bracketed IPv6 literal is accepted too).
    std::string bare = host.size() > 2 && host.front() == '[' && host.back() == ']'
                           ? host.substr(1, host.size() - 2)
                           : host;
    std::string text = bare.find(':') != std::string::npos
                           ? "[" + bare + "]:" + std::to_string(port)
                           : bare + ":" + std::to_string(port);
    if (result<address> lit = address::parse(text); lit && lit->is_ip()) {
        if (family != address_family::unspecified && lit->family() != family) {
            co_return std::error_code(EAI_ADDRFAMILY, resolve_category());
        }
        co_return std::vector<address>{*lit};
    }
    int af = family == address_family::ipv4   ? AF_INET
             : family == address_family::ipv6 ? AF_INET6
                                              : AF_UNSPEC;
    result<lookup> r = co_await offload(&getaddrinfo_blocking, std::move(host), port, af);
    if (!r) {
        co_return r.error();
    }
    if (r->error) {
        co_return r->error;
    }
    if (r->addrs.empty()) {
        co_return std::error_code(EAI_NONAME, resolve_category());
    }
    co_return std::move(r->addrs);
}

} // namespace tether::net
