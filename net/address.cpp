#include "net/address.hpp"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <net/if.h>
#include <system_error>

namespace tether::net {

namespace {

std::error_code invalid() noexcept {
    return std::make_error_code(std::errc::invalid_argument);
}

// Parses a decimal port, 0 to 65535, with nothing else around it.
bool parse_port(std::string_view s, std::uint16_t& port) noexcept {
    if (s.empty() || s.size() > 5) {
        return false;
    }
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size() || v > 65535) {
        return false;
    }
    port = static_cast<std::uint16_t>(v);
    return true;
}

// inet_pton needs a NUL-terminated string; addresses are short.
template <std::size_t N>
bool copy_z(std::string_view s, char (&buf)[N]) noexcept {
    if (s.size() >= N) {
        return false;
    }
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    return true;
}

} // namespace

address::address() noexcept : storage_{}, len_(0) {
    storage_.ss_family = AF_UNSPEC;
}

address address::ipv4(std::array<std::uint8_t, 4> bytes, std::uint16_t port) noexcept {
    address a;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&sin.sin_addr, bytes.data(), 4);
    std::memcpy(&a.storage_, &sin, sizeof sin);
    a.len_ = sizeof sin;
    return a;
}

address address::ipv4_loopback(std::uint16_t port) noexcept {
    return ipv4({127, 0, 0, 1}, port);
}

address address::ipv4_any(std::uint16_t port) noexcept {
    return ipv4({0, 0, 0, 0}, port);
}

address address::ipv6(const std::array<std::uint8_t, 16>& bytes, std::uint16_t port,
                      std::uint32_t scope_id) noexcept {
    address a;
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    std::memcpy(&sin6.sin6_addr, bytes.data(), 16);
    sin6.sin6_scope_id = scope_id;
    std::memcpy(&a.storage_, &sin6, sizeof sin6);
    a.len_ = sizeof sin6;
    return a;
}

address address::ipv6_loopback(std::uint16_t port) noexcept {
    std::array<std::uint8_t, 16> b{};
    b[15] = 1;
    return ipv6(b, port);
}

address address::ipv6_any(std::uint16_t port) noexcept {
    return ipv6({}, port);
}

result<address> address::local(std::string_view path) {
    address a;
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    // An abstract name is a NUL byte followed by the name, with no terminator; a path needs
    // room for its terminating NUL.
    bool abstract = !path.empty() && path.front() == '@';
    std::size_t room = abstract ? sizeof sun.sun_path : sizeof sun.sun_path - 1;
    if (path.size() > room) {
        return std::make_error_code(std::errc::filename_too_long);
    }
    std::memcpy(sun.sun_path, path.data(), path.size());
    if (abstract) {
        sun.sun_path[0] = '\0';
    }
    std::memcpy(&a.storage_, &sun, sizeof sun);
    a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                    (abstract || path.empty() ? 0 : 1));
    return a;
}

result<address> address::parse(std::string_view text) {
    if (text.starts_with("unix:")) {
        return local(text.substr(5));
    }
    if (text.starts_with('/') || text.starts_with('@')) {
        return local(text);
    }
    if (text.starts_with('[')) {
        std::size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return invalid();
        }
        std::uint16_t port;
        if (!parse_port(text.substr(close + 2), port)) {
            return invalid();
        }
        std::string_view host = text.substr(1, close - 1);
        std::uint32_t scope = 0;
        if (std::size_t pct = host.find('%'); pct != std::string_view::npos) {
            std::string_view zone = host.substr(pct + 1);
            host = host.substr(0, pct);
            auto [end, ec] = std::from_chars(zone.data(), zone.data() + zone.size(), scope);
            if (zone.empty()) {
                return invalid();
            }
            if (ec != std::errc{} || end != zone.data() + zone.size()) {
                char name[IF_NAMESIZE + 1];
                if (!copy_z(zone, name) || (scope = ::if_nametoindex(name)) == 0) {
                    return invalid();
                }
            }
        }
        char buf[INET6_ADDRSTRLEN];
        std::array<std::uint8_t, 16> bytes{};
        if (!copy_z(host, buf) || ::inet_pton(AF_INET6, buf, bytes.data()) != 1) {
            return invalid();
        }
        return ipv6(bytes, port, scope);
    }
    std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
        return invalid();
    }
    std::uint16_t port;
    if (!parse_port(text.substr(colon + 1), port)) {
        return invalid();
    }
    char buf[INET_ADDRSTRLEN];
    std::array<std::uint8_t, 4> bytes{};
    // inet_pton takes only the dotted quad (no octal or short forms), as Go's ParseIP.
    if (!copy_z(text.substr(0, colon), buf) || ::inet_pton(AF_INET, buf, bytes.data()) != 1) {
        return invalid();
    }
    return ipv4(bytes, port);
}

result<address> address::from_sockaddr(const sockaddr* sa, socklen_t len) noexcept {
    if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t)) ||
        len > static_cast<socklen_t>(sizeof(sockaddr_storage))) {
        return invalid();
    }
    address a;
    switch (sa->sa_family) {
    case AF_INET:
        if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) {
            return invalid();
        }
        len = sizeof(sockaddr_in);
        break;
    case AF_INET6:
        if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) {
            return invalid();
        }
        len = sizeof(sockaddr_in6);
        break;
    case AF_UNIX:
        if (len > static_cast<socklen_t>(sizeof(sockaddr_un))) {
            return invalid();
        }
        break;
    default:
        return std::make_error_code(std::errc::address_family_not_supported);
    }
    std::memcpy(&a.storage_, sa, len);
    a.len_ = len;
    return a;
}

address_family address::family() const noexcept {
    switch (storage_.ss_family) {
    case AF_INET:
        return address_family::ipv4;
    case AF_INET6:
        return address_family::ipv6;
    case AF_UNIX:
        return address_family::local;
    default:
        return address_family::unspecified;
    }
}

bool address::is_ip() const noexcept {
    return storage_.ss_family == AF_INET || storage_.ss_family == AF_INET6;
}

std::uint16_t address::port() const noexcept {
    if (storage_.ss_family == AF_INET) {
        return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    }
    if (storage_.ss_family == AF_INET6) {
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    }
    return 0;
}

address address::with_port(std::uint16_t port) const noexcept {
    address a = *this;
    if (storage_.ss_family == AF_INET) {
        reinterpret_cast<sockaddr_in*>(&a.storage_)->sin_port = htons(port);
    } else if (storage_.ss_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(&a.storage_)->sin6_port = htons(port);
    }
    return a;
}

bool address::is_loopback() const noexcept {
    if (storage_.ss_family == AF_INET) {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(&storage_);
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (storage_.ss_family == AF_INET6) {
        const auto* a6 = &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a6)) {
            return true;
        }
        return IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127;
    }
    return false;
}

std::string address::path() const {
    if (storage_.ss_family != AF_UNIX) {
        return {};
    }
    const auto* sun = reinterpret_cast<const sockaddr_un*>(&storage_);
    std::size_t n =
        len_ > offsetof(sockaddr_un, sun_path) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
    if (n == 0) {
        return {};
    }
    if (sun->sun_path[0] == '\0') {
        return "@" + std::string(sun->sun_path + 1, n - 1);
    }
    // A pathname's length may include its terminator, or not (the kernel reports both).
    return std::string(sun->sun_path, strnlen(sun->sun_path, n));
}

namespace detail {

std::size_t format_ip(const address& a, char (&buf)[64]) noexcept {
    const ::sockaddr* sa = a.data();
    char* out = buf;
    char* const end = buf + sizeof buf;
    if (sa->sa_family == AF_INET) {
        // By hand: inet_ntop formats IPv4 through sprintf, ten times the cost of this.
        const auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
        const auto* b = reinterpret_cast<const unsigned char*>(&sin->sin_addr);
        for (int i = 0; i < 4; ++i) {
            if (i != 0) {
                *out++ = '.';
            }
            out = std::to_chars(out, end, static_cast<unsigned>(b[i])).ptr;
        }
    } else if (sa->sa_family == AF_INET6) {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
        *out++ = '[';
        if (::inet_ntop(AF_INET6, &sin6->sin6_addr, out, INET6_ADDRSTRLEN) == nullptr) {
            return 0;
        }
        out += std::strlen(out);
        if (sin6->sin6_scope_id != 0) {
            *out++ = '%';
            out = std::to_chars(out, end, sin6->sin6_scope_id).ptr;
        }
        *out++ = ']';
    } else {
        return 0;
    }
    *out++ = ':';
    out = std::to_chars(out, end, a.port()).ptr;
    return static_cast<std::size_t>(out - buf);
}

} // namespace detail

std::string address::to_string() const {
    char buf[64];
    if (std::size_t n = detail::format_ip(*this, buf); n != 0) {
        return std::string(buf, n);
    }
    if (storage_.ss_family == AF_UNIX) {
        return "unix:" + path();
    }
    return {};
}

bool operator==(const address& a, const address& b) noexcept {
    if (a.storage_.ss_family != b.storage_.ss_family) {
        return false;
    }
    if (a.storage_.ss_family == AF_UNIX) {
        return a.path() == b.path();
    }
    return a.len_ == b.len_ && std::memcmp(&a.storage_, &b.storage_, a.len_) == 0;
}

} // namespace tether::net
