#pragma once
// with_value: request-scoped values under typed keys that compare by identity.

#include "context/context.hpp"

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tether {

/// A key for values of type `T` in a context: two keys are equal only if they are the same
/// object, so libraries can never collide.
///
/// Declare keys as `inline constexpr` objects at namespace scope; the optional name is only
/// used when printing a context.
///
/// Example:
///
///     struct user_id { std::string value; };
///     inline constexpr tether::context_key<user_id> user_key{"user"};
///     auto ctx = tether::with_value(parent, user_key, user_id{"ada"});
///     if (const user_id* u = ctx.value(user_key)) { ... }
template <class T>
class context_key {
public:
    constexpr context_key() noexcept = default;
    constexpr explicit context_key(const char* name) noexcept : name_(name) {}
    context_key(const context_key&) = delete;
    context_key& operator=(const context_key&) = delete;

    /// Returns the name given at construction, or "key".
    constexpr std::string_view name() const noexcept { return name_; }

private:
    const char* name_ = "key";
};

namespace detail {

/// What every value node has, whatever its value's type; the other nodes don't pay for it.
struct value_node_base : node {
    const void* key = nullptr;                             // the key's address
    void (*describe)(const node*, std::string&) = nullptr; // "WithValue(k, v)"
};

template <class T>
struct value_node : value_node_base {
    template <class... Args>
    explicit value_node(Args&&... args) : value(std::forward<Args>(args)...) {}
    T value;
    std::string_view key_name;

    static void destroy_fn(node* n) noexcept { delete static_cast<value_node*>(n); }
    static void describe_fn(const node* n, std::string& out) {
        auto* self = static_cast<const value_node*>(n);
        if constexpr (fmt::is_formattable<T>::value) {
            fmt::format_to(std::back_inserter(out), "WithValue({}, {})", self->key_name,
                           self->value);
        } else {
            fmt::format_to(std::back_inserter(out), "WithValue({}, <{} bytes>)", self->key_name,
                           sizeof(T));
        }
    }
};

/// Fills the inherited fields of a new node derived from `parent`. Inline: every derivation
/// (with_value's template, the context functions, the request-ID middleware's reused node)
/// would otherwise call into the library through the PLT.
inline void link_child(node& child, const context& parent) noexcept {
    node* p = parent.node();
    child.parent = p;
    if (p != nullptr) [[likely]] {
        p->add_ref();
        child.canceler = p->canceler;
        child.clk = p->clk;
        child.deadline = p->deadline;
    } else {
        child.clk = &real_clock();
    }
}

/// Like `link_child`, without taking a reference on `parent`'s node: the child borrows it.
/// No atomic read-modify-write on the parent's count on the way in, nor on the way out when
/// the borrow ends by `unlink_borrowed`.
///
/// The caller keeps the borrow safe, since the child's last release would drop a reference
/// on the parent that was never taken (node::release_slow walks up): it holds `parent` and
/// a reference of its own on the child for as long as the borrow lasts, and ends the borrow
/// before it drops that reference, either by `unlink_borrowed` (once it knows that nobody
/// else holds the child, nor can any more) or by `own_parent_link` (the child may outlive
/// the parent's other holders: a context handed to user code may be kept, as in Go).
inline void link_child_borrowed(node& child, const context& parent) noexcept {
    node* p = parent.node();
    child.parent = p;
    if (p != nullptr) [[likely]] {
        child.canceler = p->canceler;
        child.clk = p->clk;
        child.deadline = p->deadline;
    } else {
        child.canceler = nullptr;
        child.clk = &real_clock();
        child.deadline = time_point::max();
    }
}

/// Ends the borrow of `link_child_borrowed`: the child's link on its parent takes a
/// reference of its own, as `link_child`'s does. The parent must still be held.
inline void own_parent_link(node& child) noexcept {
    if (child.parent != nullptr) {
        child.parent->add_ref();
    }
}

/// Ends the borrow of `link_child_borrowed` by detaching the child from its parent (nothing
/// to release). Only for a child that nobody else holds, nor can hold any more.
inline void unlink_borrowed(node& child) noexcept {
    child.parent = nullptr;
    child.canceler = nullptr;
}

} // namespace detail

/// Returns a child of `parent` that carries `value` under `key`; lookups of other keys
/// pass through to `parent`.
///
/// A later `with_value` under the same key shadows this one in its descendants only.
/// Use values for request-scoped data (request ID, user, role), not optional parameters.
///
/// Errors: throws std::bad_alloc if the node can't be allocated (one allocation).
template <class T, class V>
[[nodiscard]] context with_value(const context& parent, const context_key<T>& key, V&& value) {
    auto* n = new detail::value_node<T>(std::forward<V>(value));
    n->kind = detail::node_kind::value;
    n->key = &key;
    n->key_name = key.name();
    n->destroy = &detail::value_node<T>::destroy_fn;
    n->describe = &detail::value_node<T>::describe_fn;
    detail::link_child(*n, parent);
    return context::adopt(n);
}

template <class T>
const T* context::value(const context_key<T>& key) const noexcept {
    const void* k = &key;
    for (const detail::node* n = n_; n != nullptr; n = n->parent) {
        if (n->kind == detail::node_kind::value &&
            static_cast<const detail::value_node_base*>(n)->key == k) {
            return &static_cast<const detail::value_node<T>*>(n)->value;
        }
    }
    return nullptr;
}

} // namespace tether
