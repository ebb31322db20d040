#pragma once
// header_map: response (and client request) header fields, case-insensitive by name.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tether::http {

/// Header fields in insertion order; names compare without case, values are kept as given.
class header_map {
public:
    /// Replaces every field named `name` with one holding `value`.
    void set(std::string_view name, std::string_view value);
    /// Adds a field, keeping existing ones of the same name.
    void add(std::string_view name, std::string_view value);
    /// Returns the first value of `name`, or nullopt.
    std::optional<std::string_view> get(std::string_view name) const noexcept;
    /// Returns true if a field named `name` exists.
    bool has(std::string_view name) const noexcept { return get(name).has_value(); }
    /// Removes every field named `name`.
    void remove(std::string_view name);
    void clear() noexcept { fields_.clear(); }
    bool empty() const noexcept { return fields_.empty(); }

    auto begin() const noexcept { return fields_.begin(); }
    auto end() const noexcept { return fields_.end(); }

private:
    std::vector<std::pair<std::string, std::string>> fields_;
};

/// Returns the current time as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT"), formatted at
/// most once per second per thread.
std::string_view http_date() noexcept;

} // namespace tether::http
