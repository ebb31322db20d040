#pragma once
// address: an IPv4, IPv6 or Unix-domain socket address, parsed from and formatted to text.

#include "runtime/result.hpp"

#include <fmt/format.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>

namespace tether::net {

/// The kind of socket address an `address` holds.
enum class address_family {
    unspecified, ///< a default-constructed address: no socket can use it
    ipv4,        ///< AF_INET
    ipv6,        ///< AF_INET6
    local,       ///< AF_UNIX: a path, an abstract name, or unnamed
};

/// A socket address: IPv4 or IPv6 with a port, or a Unix-domain path.
///
/// A value type (a `sockaddr_storage` and its length), cheap to copy, comparable. It parses
/// and formats the same text: "127.0.0.1:8080", "[::1]:8080", "[fe80::1%2]:80",
/// "unix:/run/app.sock" (or just "/run/app.sock"), and "unix:@name" for Linux's abstract
/// namespace. Host names are not addresses: resolve them first.
///
/// Example:
///
///     result<address> a = address::parse("127.0.0.1:0");
///     fmt::print("listening on {}\n", *a);
class address {
public:
    /// Makes an unspecified address (family `unspecified`, formats as "").
    address() noexcept;

    /// Returns the IPv4 address `bytes` (network order, "a.b.c.d") with `port`.
    static address ipv4(std::array<std::uint8_t, 4> bytes, std::uint16_t port) noexcept;
    /// Returns 127.0.0.1 with `port` (0 lets the kernel choose when binding).
    static address ipv4_loopback(std::uint16_t port = 0) noexcept;
    /// Returns 0.0.0.0 with `port`: every local IPv4 address, for binding.
    static address ipv4_any(std::uint16_t port = 0) noexcept;
    /// Returns the IPv6 address `bytes` (network order) with `port` and `scope_id` (the
    /// interface index of a link-local address; 0 for none).
    static address ipv6(const std::array<std::uint8_t, 16>& bytes, std::uint16_t port,
                        std::uint32_t scope_id = 0) noexcept;
    /// Returns ::1 with `port`.
    static address ipv6_loopback(std::uint16_t port = 0) noexcept;
    /// Returns :: with `port`: every local address, for binding.
    static address ipv6_any(std::uint16_t port = 0) noexcept;

    /// Returns the Unix-domain address of `path`; a leading '@' names Linux's abstract
    /// namespace (the '@' stands for the leading NUL byte). An empty `path` gives the
    /// unnamed address (a socket that is not bound).
    ///
    /// Errors: `std::errc::filename_too_long` if the path does not fit in `sun_path` (107
    /// bytes, 108 for an abstract name).
    static result<address> local(std::string_view path);

    /// Parses `text`: "a.b.c.d:port", "[ipv6]:port" (with an optional "%scope", a number or
    /// an interface name), "unix:PATH", or a PATH starting with '/' or '@'. The port is
    /// required for IP addresses and may be 0.
    ///
    /// Errors: `std::errc::invalid_argument` for anything else (host names, a missing or
    /// out-of-range port, a malformed address); `std::errc::filename_too_long` as `local`.
    static result<address> parse(std::string_view text);

    /// Returns the address the kernel wrote into `sa` (as `accept`, `getsockname` and
    /// `recvfrom` do); `len` is the length it reported.
    ///
    /// Errors: `std::errc::address_family_not_supported` for other families;
    /// `std::errc::invalid_argument` if `len` is too short for the family or too long.
    static result<address> from_sockaddr(const sockaddr* sa, socklen_t len) noexcept;

    /// Makes this address the IPv4 or IPv6 address in `sa` (equal to what `from_sockaddr`
    /// returns for it), copying only its family's bytes: no `sockaddr_storage` is cleared and
    /// copied whole. Returns false, leaving the address as it was, for another family or a
    /// `len` too short for the family.
    bool assign_ip(const sockaddr* sa, socklen_t len) noexcept {
        if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
            std::memcpy(&storage_, sa, sizeof(sockaddr_in));
            len_ = sizeof(sockaddr_in);
            return true;
        }
        if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
            std::memcpy(&storage_, sa, sizeof(sockaddr_in6));
            len_ = sizeof(sockaddr_in6);
            return true;
        }
        return false;
    }

    /// Returns the family of the address.
    address_family family() const noexcept;
    /// Returns true for an IPv4 or IPv6 address.
    bool is_ip() const noexcept;
    /// Returns the port of an IP address; 0 for other families.
    std::uint16_t port() const noexcept;
    /// Returns a copy with the port replaced; other families are returned unchanged.
    address with_port(std::uint16_t port) const noexcept;
    /// Returns true for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104.
    bool is_loopback() const noexcept;
    /// Returns the path of a Unix-domain address ('@' first for an abstract name; empty when
    /// unnamed); empty for other families.
    std::string path() const;

    /// Returns the address as the kernel takes it, for `bind`, `connect` and `sendto`.
    const ::sockaddr* data() const noexcept {
        return reinterpret_cast<const ::sockaddr*>(&storage_);
    }
    /// Returns the length of `data()` in bytes.
    socklen_t size() const noexcept { return len_; }
    /// Returns the socket-API family: AF_INET, AF_INET6, AF_UNIX or AF_UNSPEC.
    int native_family() const noexcept { return storage_.ss_family; }

    /// Returns the text `parse` reads: "127.0.0.1:80", "[::1]:80", "unix:/path",
    /// "unix:@name", "unix:" (unnamed), or "" (unspecified).
    std::string to_string() const;

    /// Returns true if both hold the same family and the same bytes.
    friend bool operator==(const address& a, const address& b) noexcept;

private:
    ::sockaddr_storage storage_;
    socklen_t len_;
};

namespace detail {
/// Writes `a.to_string()`'s text for an IPv4 or IPv6 address into `buf` without allocating
/// and returns its length; returns 0 for other families. (The formatter below uses it: an
/// access log formats the peer of every request.)
std::size_t format_ip(const address& a, char (&buf)[64]) noexcept;
} // namespace detail

} // namespace tether::net

/// Formats an address as `address::to_string()` does: "127.0.0.1:8080", "[::1]:80",
/// "unix:/run/app.sock".
template <>
struct fmt::formatter<tether::net::address> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(const tether::net::address& a, FormatContext& ctx) const {
        char buf[64];
        if (std::size_t n = tether::net::detail::format_ip(a, buf); n != 0) {
            return fmt::formatter<std::string_view>::format(std::string_view(buf, n), ctx);
        }
        return fmt::formatter<std::string_view>::format(a.to_string(), ctx);
    }
};
