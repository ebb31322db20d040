#pragma once
// HTTP status codes and their reason phrases.

#include <string_view>

namespace tether::http {

/// Returns the reason phrase of `code` ("OK", "Not Found"), or "Unknown" for codes RFC 9110
/// does not name.
std::string_view status_text(int code) noexcept;

/// Returns true if a response with `code` never has a body (1xx, 204, 304).
constexpr bool status_has_no_body(int code) noexcept {
    return (code >= 100 && code < 200) || code == 204 || code == 304;
}

} // namespace tether::http
