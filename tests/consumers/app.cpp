// A program that uses tether as a consumer would: through <tether/tether.hpp> alone.
// tests/consumers/run.sh builds it against an installed tether (pkg-config) and against tether
// as a Meson subproject.

#include <tether/tether.hpp>

#include <fmt/format.h>

#include <string>

namespace {
inline constexpr tether::context_key<std::string> user_key{"user"};
} // namespace

int main() {
    auto [ctx, cancel] = tether::with_cancel(tether::background());
    auto child = tether::with_value(ctx, user_key, std::string("ada"));
    cancel();
    const std::string* user = child.value(user_key);
    fmt::print("{}: {}\n", child, child.err().message());
    bool ok = ctx.err() == tether::errc::canceled && child.err() == tether::errc::canceled &&
              user != nullptr && *user == "ada";
    return ok ? 0 : 1;
}
