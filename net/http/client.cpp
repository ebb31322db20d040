#include "net/http/client.hpp"

#include "net/http/parser.hpp"
#include "net/io_errc.hpp"
#include "net/tcp_stream.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstring>

namespace tether::http {

namespace {

class client_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tether.http.client"; }
    std::string message(int ev) const override {
        switch (static_cast<client_errc>(ev)) {
        case client_errc::bad_url:
            return "unsupported or malformed URL";
        case client_errc::bad_response:
            return "malformed HTTP response";
        case client_errc::body_too_large:
            return "response body too large";
        case client_errc::too_many_redirects:
            return "too many redirects";
        }
        return "unknown HTTP client error";
    }
};

struct url_parts {
    std::string host_port; // the pool key and the Host header
    net::address addr;
    std::string target;
};

result<url_parts> parse_url(std::string_view url) {
    if (url.substr(0, 7) != "http://") {
        return make_error_code(client_errc::bad_url);
    }
    url.remove_prefix(7);
    std::size_t slash = url.find_first_of("/?");
    std::string_view authority = url.substr(0, slash);
    url_parts u;
    u.target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
    if (!u.target.empty() && u.target[0] == '?') {
        u.target.insert(u.target.begin(), '/');
    }
    std::string_view host = authority;
    std::string_view port = "80";
    if (!authority.empty() && authority[0] == '[') {
        std::size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            return make_error_code(client_errc::bad_url);
        }
        host = authority.substr(0, close + 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') {
                return make_error_code(client_errc::bad_url);
            }
            port = authority.substr(close + 2);
        }
    } else if (std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
    }
    std::string ip(host == "localhost" ? std::string_view("127.0.0.1") : host);
    auto a = net::address::parse(fmt::format("{}:{}", ip, port));
    if (!a) {
        return make_error_code(client_errc::bad_url);
    }
    u.addr = *a;
    u.host_port = std::string(authority);
    return u;
}

} // namespace

const std::error_category& client_category() noexcept {
    static const client_category_impl c;
    return c;
}

namespace detail {

struct client_state {
    client_options opts;
    std::map<std::string, std::vector<net::tcp_stream>> idle;

    task<result<response>> once(const std::string& method, const url_parts& u,
                                const header_map& headers, const std::string& body);
    task<result<response>> exchange(net::tcp_stream& s, const std::string& wire,
                                    const std::string& method, bool& reusable, bool& got_bytes);
};

// Reads a response from `s`. `reusable` says whether the connection may carry another
// request; `got_bytes` whether any byte of a response arrived (a stale pooled connection
// fails before that, and the request can be retried on a new one).
task<result<response>> client_state::exchange(net::tcp_stream& s, const std::string& wire,
                                              const std::string& method, bool& reusable,
                                              bool& got_bytes) {
    reusable = false;
    got_bytes = false;
    if (auto [n, err] = co_await s.write_all(std::string_view(wire)); err) {
        co_return err;
    }
    std::string in;
    std::size_t head_end = std::string::npos;
    char buf[16384];
    while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
        if (in.size() > opts.max_header_bytes) {
            co_return make_error_code(client_errc::bad_response);
        }
        auto r = co_await s.read_some(std::as_writable_bytes(std::span(buf)));
        if (!r) {
            co_return r.error();
        }
        got_bytes = true;
        in.append(buf, *r);
    }
    response resp;
    std::string_view head(in.data(), head_end);
    std::size_t eol = head.find("\r\n");
    std::string_view status_line = head.substr(0, eol);
    if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
        (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ') {
        co_return make_error_code(client_errc::bad_response);
    }
    resp.version_minor = status_line[7] - '0';
    auto [p, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, resp.status);
    if (ec != std::errc{} || p != status_line.data() + 12 || resp.status < 100) {
        co_return make_error_code(client_errc::bad_response);
    }
    resp.reason =
        std::string(status_line.size() > 13 ? status_line.substr(13) : std::string_view{});
    head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 2);
    while (!head.empty()) {
        eol = head.find("\r\n");
        std::string_view line = head.substr(0, eol);
        head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 2);
        std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) {
            co_return make_error_code(client_errc::bad_response);
        }
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
            v.remove_prefix(1);
        }
        while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
            v.remove_suffix(1);
        }
        resp.headers.add(line.substr(0, colon), v);
    }
    std::string rest = in.substr(head_end + 4);
    bool keep_alive = resp.version_minor == 1;
    if (auto c = resp.headers.get("connection")) {
        keep_alive =
            resp.version_minor == 1 ? !has_token(*c, "close") : has_token(*c, "keep-alive");
    }
    bool no_body =
        method == "HEAD" || resp.status < 200 || resp.status == 204 || resp.status == 304;
    auto te = resp.headers.get("transfer-encoding");
    auto cl = resp.headers.get("content-length");
    if (no_body) {
        // nothing to read
    } else if (te && iequals(*te, "chunked")) {
        chunked_decoder dec;
        std::string pending = std::move(rest);
        for (;;) {
            std::size_t used = 0;
            std::size_t produced = 0;
            auto st = dec.decode(pending.data(), pending.size(), used, produced);
            if (st == chunked_decoder::status::error) {
                co_return make_error_code(client_errc::bad_response);
            }
            resp.body.append(pending.data(), produced);
            if (resp.body.size() > opts.max_body_bytes) {
                co_return make_error_code(client_errc::body_too_large);
            }
            pending.erase(0, used);
            if (st == chunked_decoder::status::done) {
                break;
            }
            auto r = co_await s.read_some(std::as_writable_bytes(std::span(buf)));
            if (!r) {
                co_return r.error();
            }
            pending.append(buf, *r);
        }
    } else if (cl) {
        std::uint64_t len = 0;
        auto [q, e] = std::from_chars(cl->data(), cl->data() + cl->size(), len);
        if (e != std::errc{} || q != cl->data() + cl->size()) {
            co_return make_error_code(client_errc::bad_response);
        }
        if (len > opts.max_body_bytes) {
            co_return make_error_code(client_errc::body_too_large);
        }
        resp.body = std::move(rest);
        if (resp.body.size() > len) {
            resp.body.resize(static_cast<std::size_t>(len)); // no pipelining: extra bytes are junk
            keep_alive = false;
        }
        std::size_t have = resp.body.size();
        resp.body.resize(static_cast<std::size_t>(len));
        if (have < len) {
            auto [n, err] = co_await s.read_exact(std::as_writable_bytes(
                std::span(resp.body.data() + have, resp.body.size() - have)));
            if (err) {
                co_return err;
            }
        }
    } else {
        // Delimited by the close of the connection.
        resp.body = std::move(rest);
        keep_alive = false;
        for (;;) {
            auto r = co_await s.read_some(std::as_writable_bytes(std::span(buf)));
            if (!r) {
                if (r.error() == net::io_errc::eof) {
                    break;
                }
                co_return r.error();
            }
            resp.body.append(buf, *r);
            if (resp.body.size() > opts.max_body_bytes) {
                co_return make_error_code(client_errc::body_too_large);
            }
        }
    }
    reusable = keep_alive;
    co_return resp;
}

task<result<response>> client_state::once(const std::string& method, const url_parts& u,
                                          const header_map& headers, const std::string& body) {
    std::string wire = fmt::format("{} {} HTTP/1.1\r\n", method, u.target);
    if (!headers.has("host")) {
        wire += fmt::format("Host: {}\r\n", u.host_port);
    }
    for (const auto& [k, v] : headers) {
        wire += fmt::format("{}: {}\r\n", k, v);
    }
    if (!headers.has("content-length") &&
        (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")) {
        wire += fmt::format("Content-Length: {}\r\n", body.size());
    }
    wire += "\r\n";
    wire += body;

    for (int attempt = 0; attempt < 2; ++attempt) {
        net::tcp_stream s;
        bool pooled = false;
        auto& pool = idle[u.host_port];
        if (!pool.empty()) {
            s = std::move(pool.back());
            pool.pop_back();
            pooled = true;
        } else {
            auto c = co_await net::tcp_stream::connect(u.addr);
            if (!c) {
                co_return c.error();
            }
            s = std::move(*c);
            (void)s.set_nodelay(true);
        }
        bool reusable = false;
        bool got_bytes = false;
        auto r = co_await exchange(s, wire, method, reusable, got_bytes);
        if (!r) {
            context ctx = co_await this_coro::context;
            // A kept-alive connection the server closed meanwhile fails before any byte of a
            // response: try once more on a new connection, unless we were canceled.
            if (pooled && !got_bytes && !ctx.is_done()) {
                continue;
            }
            co_return r.error(); // s closes here: a failed or canceled request ends its connection
        }
        if (reusable && pool.size() < opts.max_idle_per_host) {
            pool.push_back(std::move(s));
        }
        co_return r;
    }
    co_return make_error_code(net::io_errc::eof);
}

} // namespace detail

client::client(client_options opts) : s_(std::make_shared<detail::client_state>()) {
    s_->opts = opts;
}
client::~client() = default;

task<result<response>> client::get(std::string url) {
    return request("GET", std::move(url));
}

task<result<response>> client::request(std::string method, std::string url, header_map headers,
                                       std::string body) {
    std::shared_ptr<detail::client_state> s = s_;
    for (int redirects = 0;; ++redirects) {
        auto u = parse_url(url);
        if (!u) {
            co_return u.error();
        }
        auto r = co_await s->once(method, *u, headers, body);
        if (!r || !s->opts.follow_redirects) {
            co_return r;
        }
        int st = r->status;
        std::string_view loc = r->header("location");
        if (!(st == 301 || st == 302 || st == 303 || st == 307 || st == 308) || loc.empty()) {
            co_return r;
        }
        if (redirects + 1 > s->opts.max_redirects) {
            co_return make_error_code(client_errc::too_many_redirects);
        }
        url = loc.substr(0, 7) == "http://" ? std::string(loc)
                                            : fmt::format("http://{}{}", u->host_port, loc);
        if (st == 303 || ((st == 301 || st == 302) && method == "POST")) {
            method = "GET";
            body.clear();
        }
    }
}

std::size_t client::idle_connections() const noexcept {
    std::size_t n = 0;
    for (const auto& [k, v] : s_->idle) {
        n += v.size();
    }
    return n;
}

} // namespace tether::http
