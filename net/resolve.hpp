#pragma once
// resolve: host names to addresses, through getaddrinfo on the offload pool.

#include "net/address.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace tether::net {

/// Returns the error category of getaddrinfo's EAI_* codes (its name is "tether.resolve";
/// messages are gai_strerror's). EAI_SYSTEM is reported as the errno it stands for.
const std::error_category& resolve_category() noexcept;

/// Resolves `host` (a name, or an IPv4 or IPv6 literal) and `port` to the addresses to try,
/// in the order getaddrinfo gives them (RFC 6724: the preferred first).
///
/// `family` narrows the answer to `ipv4` or `ipv6` (`unspecified`: both). A literal is
/// parsed on the loop without a lookup. Names are looked up with getaddrinfo on the offload
/// pool, which reads /etc/hosts and asks DNS as the system is configured.
///
/// Errors: codes of `resolve_category()` (EAI_NONAME for a name that does not exist,
/// EAI_AGAIN for a resolver that did not answer); `std::errc::invalid_argument` for an empty
/// host or a `local` family.
///
/// Cancellation: returns the context's error at once when the context is done, even while
/// getaddrinfo runs on (its answer is then dropped); under a context already done, nothing
/// is looked up.
[[nodiscard]] task<result<std::vector<address>>>
resolve(std::string host, std::uint16_t port, address_family family = address_family::unspecified);

} // namespace tether::net
