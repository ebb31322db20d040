#include "net/http/sharded_server.hpp"

#include "context/without_cancel.hpp"
#include "net/tcp_listener.hpp"
#include "runtime/spawn.hpp"

#include <utility>

namespace tether::http {

namespace {

// Awaits every handle, whatever the awaiting context does (each task is a child of it and
// ends by itself once it is done), and returns the first error.
task<result<void>> join_all(std::vector<join_handle<result<void>>>& hs) {
    context ctx = co_await this_coro::context;
    context detached = without_cancel(ctx);
    result<void> first;
    for (join_handle<result<void>>& h : hs) {
        task<result<result<void>>> j = with_context(detached, std::move(h));
        result<result<void>> r = co_await std::move(j);
        std::error_code e = !r ? r.error() : (!*r ? r->error() : std::error_code{});
        if (e && first) {
            first = e;
        }
    }
    co_return first;
}

} // namespace

sharded_server::sharded_server(runtime& rt, handler h, server_options opts) : rt_(&rt) {
    shards_.reserve(rt.size());
    for (std::size_t i = 0; i < rt.size(); ++i) {
        shards_.push_back(std::make_unique<server>(h, opts));
    }
}

sharded_server::~sharded_server() = default;

result<void> sharded_server::listen(const net::address& at) {
    auto group = net::tcp_listener::bind_group(at, shards_.size());
    if (!group) {
        return group.error();
    }
    for (std::size_t i = 0; i < shards_.size(); ++i) {
        shards_[i]->listen(std::move((*group)[i]));
    }
    return {};
}

result<net::address> sharded_server::local_addr() const {
    return shards_.front()->local_addr();
}

task<result<void>> sharded_server::serve() {
    context ctx = co_await this_coro::context;
    std::vector<join_handle<result<void>>> hs;
    hs.reserve(shards_.size());
    for (std::size_t i = 0; i < shards_.size(); ++i) {
        hs.push_back(spawn_on(rt_->loop(i), ctx, shards_[i]->serve()));
    }
    co_return co_await join_all(hs);
}

task<result<void>> sharded_server::shutdown() {
    context ctx = co_await this_coro::context;
    std::vector<join_handle<result<void>>> hs;
    hs.reserve(shards_.size());
    for (std::size_t i = 0; i < shards_.size(); ++i) {
        hs.push_back(spawn_on(rt_->loop(i), ctx, shards_[i]->shutdown()));
    }
    co_return co_await join_all(hs);
}

} // namespace tether::http
