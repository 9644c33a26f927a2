#include "engine/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <thread>
#include <vector>

#include "base/io.h"
#include "engine/admin_protocol.h"
#include "engine/backend_factory.h"
#include "engine/gui_attach.h"
#include "engine/named_domains.h"
#include "engine/policy_gate.h"
#include "engine/pool.h"
#include "engine/process_backend.h"
#include "engine/state_store.h"

namespace odyssey::engine {
namespace {

namespace asio = boost::asio;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Sets modes only on folders it creates: dir gets mode, missing ancestors 0711 (searchable,
// not listable: hal/native's mapped ids may have to pass; odysseyd's umask is 077). An
// existing folder (say /tmp for a socket_path of /tmp/x.sock) keeps its mode.
Status MkdirP(const std::string& dir, mode_t mode) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  const std::filesystem::path target(d);
  std::vector<std::filesystem::path> missing;
  std::error_code ec;
  for (auto p = target; !p.empty() && !std::filesystem::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  std::filesystem::create_directories(target, ec);
  if (ec) return Error{"creating " + dir + ": " + ec.message(), ec.value()};
  for (auto& p : missing) ::chmod(p.c_str(), p == target ? mode : 0711);
  return OkStatus();
}

// One call in flight: what `odyssey ls` shows and what `kill`/timeouts act on.
struct CallCtx {
  std::string name;  // filled when the member is taken
  std::string template_name;
  std::string what;
  uint32_t uid = 0;
  int64_t started_ms = 0;
  std::mutex mu;
  Member* member = nullptr;  // owned by the call thread
  bool killed = false;
  std::string kill_reason;   // "killed" | "timeout" | "client gone" | "shutdown"
  std::shared_ptr<asio::steady_timer> timer;
  std::optional<GuiRequest> gui;  // show its windows on the caller's display
  // The request line was complete (loop thread) / handed to a call thread (phases_ms).
  Clock::time_point received, queued;

  void Kill(const std::string& reason) {
    std::lock_guard lock(mu);
    if (!killed) kill_reason = reason;
    killed = true;
    if (member) member->Kill();
  }
};
using CallCtxPtr = std::shared_ptr<CallCtx>;

// Threads that run calls (each blocks for a whole call), kept for the next one: waking a
// parked thread is cheaper than creating one, above all on a busy machine, where a new
// thread waits for the scheduler longer than a woken one.
class CallThreads {
 public:
  ~CallThreads() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Run(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(fn));
    if (idle_ >= queue_.size()) {
      cv_.notify_one();
      return;
    }
    threads_.emplace_back([this] { Loop(); });
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      --idle_;
      if (queue_.empty()) return;  // stop_
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stop_ = false;
};

// State-store writes that need not delay a call (decisions, call ends, domain states) run
// in order on one thread; Flush() waits for them (before reads and at shutdown).
class Bookkeeper {
 public:
  Bookkeeper() : thread_([this] { Loop(); }) {}
  ~Bookkeeper() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }
  void Flush() {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_, everything written
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      fn();
      lock.lock();
      busy_ = false;
      if (queue_.empty()) done_cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::function<void()>> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is set up
};

class DaemonImpl;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(DaemonImpl* d, asio::local::stream_protocol::socket sock, size_t max_line)
      : d_(d), sock_(std::move(sock)), reader_(max_line) {}
  void Start();
  // Any thread. A reply goes out at once with a non-blocking send when nothing is queued
  // (a call's thread answers without a hop through the loop); the rest is queued for the loop.
  void Send(const json& j);
  void Close();  // loop thread
  std::list<CallCtxPtr>& calls() { return calls_; }
  const struct ucred& cred() const { return cred_; }

 private:
  void ArmRead();
  void OnReadable();
  void WriteNext();  // loop thread

  DaemonImpl* d_;
  asio::local::stream_protocol::socket sock_;
  LineReader reader_;
  struct ucred cred_ = {};
  std::mutex out_mu_;  // outq_, writing_, closed_ and closing sock_
  std::deque<std::string> outq_;
  bool writing_ = false;
  bool closed_ = false;
  std::list<CallCtxPtr> calls_;
};

class DaemonImpl : public Daemon {
 public:
  DaemonImpl(Config config) : config_(std::move(config)), acceptor_(io_), signals_(io_) {}
  ~DaemonImpl() override;

  Status Init();
  Status Run(const std::function<void()>& ready) override;
  void Stop() override { asio::post(io_, [this] { StopOnLoop(); }); }

  // Called on the loop thread for each complete request line.
  void Handle(const std::shared_ptr<Connection>& conn, ReceivedLine line);
  bool Authorized(uid_t uid) const;
  asio::io_context& io() { return io_; }

 private:
  void Accept();
  void StopOnLoop();
  json Dispatch(const std::shared_ptr<Connection>& conn, const json& req,
                std::vector<UniqueFd>& fds, bool* async);
  json StartCall(const std::shared_ptr<Connection>& conn, const json& req,
                 std::vector<UniqueFd>& fds, bool is_service, bool* async);
  void RunCall(std::shared_ptr<Connection> conn, CallCtxPtr ctx, CallSpec spec, json id,
               uint32_t timeout_s);
  // Named persistent domains (named_domains.h): start/stop ops and calls into them.
  json StartNamedDomain(const std::shared_ptr<Connection>& conn, const json& req, bool* async);
  void RunNamedCall(std::shared_ptr<Connection> conn, CallCtxPtr ctx, CallSpec spec, json id,
                    NamedDomains::EntryPtr domain);
  json ListDomains();
  json PoolStatsJson(const std::string& only);
  json TemplatesJson();
  // template_add: validated on the loop, the backend's checks on a thread, then AddTemplate.
  json StartAddTemplate(const std::shared_ptr<Connection>& conn, const json& req,
                        const TemplateRecord& t, bool rebuild, bool* async);
  Status ValidateNewTemplate(const TemplateRecord& t);
  Status AddTemplate(TemplateRecord t, const TemplateFacts& facts);
  uint32_t PoolTarget(const TemplateRecord& t) const {
    return t.pool_size < 0 ? config_.pool_size : static_cast<uint32_t>(t.pool_size);
  }

  Config config_;
  asio::io_context io_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::signal_set signals_;
  UniqueFd lock_fd_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Bookkeeper> books_;  // after store_: drained into it before it closes
  BackendPtr backend_;
  BackendPtr fallback_;  // the process backend behind a HAL one (see PoolManager)
  std::unique_ptr<PoolManager> pools_;
  std::unique_ptr<PolicyGate> policy_;
  std::map<std::string, TemplateRecord> templates_;  // loop thread only
  std::set<std::string> adding_;  // templates whose template_add is being checked (loop only)
  Clock::time_point request_received_;  // loop thread: when the line being handled was complete
  NamedDomains named_;
  std::list<std::weak_ptr<Connection>> conns_;
  bool stopping_ = false;
  // Calls in flight (threads), for shutdown.
  std::mutex calls_mu_;
  std::condition_variable calls_cv_;
  std::list<CallCtxPtr> active_;
  int running_threads_ = 0;
  std::atomic<uint64_t> total_calls_{0};
  Clock::time_point started_ = Clock::now();
  CallThreads workers_;  // last: its threads are joined first
};

// ---- Connection ----

void Connection::Start() {
  auto cred = PeerCredentials(sock_.native_handle());
  if (!cred.ok() || !d_->Authorized(cred->uid)) {
    std::string who = cred.ok() ? "uid " + std::to_string(cred->uid) : "an unknown peer";
    spdlog::warn("refused admin connection from {}", who);
    Send(ErrorReply("permission denied: " + who +
                    " may not use this odysseyd (only its owner and root; add the uid to "
                    "allowed_uids in odysseyd.conf)"));
    Close();  // after the reply above is written
    return;
  }
  cred_ = *cred;
  sock_.non_blocking(true);
  ArmRead();
}

void Connection::ArmRead() {
  auto self = shared_from_this();
  sock_.async_wait(asio::socket_base::wait_read, [self](const boost::system::error_code& ec) {
    if (ec) {
      self->Close();
      return;
    }
    self->OnReadable();
  });
}

void Connection::OnReadable() {
  if (closed_) return;
  auto self = shared_from_this();
  for (;;) {
    auto n = reader_.ReadFrom(sock_.native_handle());
    if (!n.ok()) {
      if (n.error().code == EAGAIN) break;
      Close();
      return;
    }
    while (auto line = reader_.Next()) d_->Handle(self, std::move(*line));
    if (*n == 0) {  // peer closed: calls it started die with it
      for (auto& c : calls_) c->Kill("client gone");
      Close();
      return;
    }
    if (closed_) return;
  }
  ArmRead();
}

void Connection::Send(const json& j) {
  std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::lock_guard lock(out_mu_);
  if (closed_) return;
  if (!writing_ && outq_.empty()) {
    ssize_t n = ::send(sock_.native_handle(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(line.size())) return;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;  // peer gone: reads see it
    if (n > 0) line.erase(0, static_cast<size_t>(n));
  }
  outq_.push_back(std::move(line));
  if (writing_) return;
  writing_ = true;
  asio::post(d_->io(), [self = shared_from_this()] { self->WriteNext(); });
}

void Connection::WriteNext() {
  std::lock_guard lock(out_mu_);
  if (outq_.empty()) {
    writing_ = false;
    if (closed_) {
      boost::system::error_code ec;
      sock_.close(ec);
    }
    return;
  }
  writing_ = true;
  auto self = shared_from_this();
  // outq_.front() stays put until the handler pops it (a deque keeps its elements in place).
  asio::async_write(sock_, asio::buffer(outq_.front()),
                    [self](const boost::system::error_code& ec, size_t) {
                      {
                        std::lock_guard l(self->out_mu_);
                        self->outq_.pop_front();
                        if (ec) {
                          self->outq_.clear();
                          self->writing_ = false;
                        }
                      }
                      if (ec) {
                        self->Close();
                        return;
                      }
                      self->WriteNext();
                    });
}

void Connection::Close() {
  std::lock_guard lock(out_mu_);
  closed_ = true;
  if (writing_) return;  // WriteNext() closes after the queue drains
  outq_.clear();
  boost::system::error_code ec;
  sock_.close(ec);
}

// ---- DaemonImpl ----

DaemonImpl::~DaemonImpl() {
  named_.StopAll();
  if (pools_) pools_->Shutdown();
}

bool DaemonImpl::Authorized(uid_t uid) const {
  if (uid == 0 || uid == ::geteuid()) return true;
  for (uint32_t u : config_.allowed_uids)
    if (u == uid) return true;
  return false;
}

Status DaemonImpl::Init() {
  ::signal(SIGPIPE, SIG_IGN);
  ApplyInstallDefaults(&config_);
  ODYSSEY_TRY(MkdirP(config_.state_dir, 0700));
  std::string lock_path = config_.state_dir + "/odysseyd.lock";
  lock_fd_.reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd_) return Error::Errno("open", lock_path);
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    auto pid = ReadFileToString(lock_path, 64);
    return Error{"another odysseyd is already running for " + config_.state_dir + " (pid " +
                     (pid.ok() ? *pid : std::string("?")) +
                     "); use it, or stop it with `odyssey shutdown`", EBUSY};
  }
  std::string pid = std::to_string(::getpid());
  (void)!::ftruncate(lock_fd_.get(), 0);
  (void)!::pwrite(lock_fd_.get(), pid.data(), pid.size(), 0);

  auto store = StateStore::Open(config_.state_dir + "/state.sqlite3");
  if (!store.ok()) return store.error();
  store_ = std::move(*store);
  books_ = std::make_unique<Bookkeeper>();

  auto backend = MakeBackend(config_);
  if (!backend.ok()) return backend.error();
  backend_ = std::move(*backend);
  if (backend_->name() != "process") {
    // A template whose members the HAL cannot prepare falls back to the process backend.
    auto fb = ProcessBackend::Create({config_.stub_path, config_.state_dir, config_.service_path});
    if (fb.ok()) fallback_ = std::move(*fb);
    else spdlog::warn("no process backend to fall back to: {}", fb.error().message);
  }
  policy_ = MakePolicyGate({config_.policy_dir, config_.default_template,
                           [this](const std::string& t) { return templates_.count(t) > 0; },
                           [this](const std::string& n) { return named_.Find(n) != nullptr; }});

  // Reconciliation: everything a killed run left behind is destroyed before we serve.
  auto reaped = backend_->ReapLeftovers();
  if (!reaped.ok()) return reaped.error().Wrap("reconciling leftovers");
  if (fallback_) {
    auto more = fallback_->ReapLeftovers();
    if (more.ok()) *reaped += *more;
  }
  auto closed = store_->MarkAllInterrupted();
  if (!closed.ok()) return closed.error();
  if (*reaped || closed->first || closed->second)
    spdlog::warn("reconciled a previous run: destroyed {} leftover domain(s); {} domain record(s) "
                 "and {} interrupted call(s) closed", *reaped, closed->first, closed->second);

  auto tmpls = store_->Templates();
  if (!tmpls.ok()) return tmpls.error();
  for (auto& t : *tmpls) templates_[t.name] = t;
  if (!templates_.count(config_.default_template)) {
    TemplateRecord host{config_.default_template, "native", "", -1};
    ODYSSEY_TRY(store_->PutTemplate(host));
    templates_[host.name] = host;
  }
  StateStore* st = store_.get();
  Bookkeeper* books = books_.get();
  pools_ = std::make_unique<PoolManager>(
      backend_.get(), config_.max_domains,
      [st, books](const Member& m, const std::string& state) {
        books->Post([st, rec = DomainRecord{m.name(), m.template_name(), state, m.handle(), 0}] {
          (void)st->PutDomain(rec);
        });
      },
      fallback_.get());
  for (auto& [name, t] : templates_)
    pools_->Configure({t.name, t.kind, t.root_dir}, PoolTarget(t));

  // The admin socket: refuse to steal a live one, replace a stale one.
  std::string dir = std::filesystem::path(config_.socket_path).parent_path();
  if (!dir.empty()) ODYSSEY_TRY(MkdirP(dir, (config_.socket_mode & 0077) ? 0755 : 0700));
  if (config_.socket_path.size() >= sizeof(sockaddr_un::sun_path))
    return Error{"socket path too long: " + config_.socket_path, ENAMETOOLONG};
  {
    asio::local::stream_protocol::socket probe(io_);
    boost::system::error_code ec;
    probe.connect(asio::local::stream_protocol::endpoint(config_.socket_path), ec);
    if (!ec)
      return Error{"another daemon already serves " + config_.socket_path +
                       "; use it or choose another socket_path", EADDRINUSE};
  }
  ::unlink(config_.socket_path.c_str());
  boost::system::error_code ec;
  asio::local::stream_protocol::endpoint ep(config_.socket_path);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) ::chmod(config_.socket_path.c_str(), config_.socket_mode);
  if (!ec) acceptor_.listen(128, ec);
  if (ec) return Error{"listening on " + config_.socket_path + ": " + ec.message(), ec.value()};
  return OkStatus();
}

Status DaemonImpl::Run(const std::function<void()>& ready) {
  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (!ec) {
      spdlog::info("signal {}: shutting down", sig);
      StopOnLoop();
    }
  });
  Accept();
  spdlog::info("odysseyd {} ready on {} (backend {}, policy {}, pool size {})", EngineVersion(),
               config_.socket_path, backend_->name(), policy_->engine_name(), config_.pool_size);
  if (ready) ready();
  io_.run();
  // Stop: kill calls in flight, wait for their threads, empty the pools.
  {
    std::unique_lock lock(calls_mu_);
    for (auto& c : active_) c->Kill("shutdown");
    calls_cv_.wait(lock, [this] { return running_threads_ == 0; });
  }
  named_.StopAll();
  pools_->Shutdown();
  ::unlink(config_.socket_path.c_str());
  spdlog::info("odysseyd stopped");
  return OkStatus();
}

void DaemonImpl::StopOnLoop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  signals_.cancel(ec);
  for (auto& w : conns_)
    if (auto c = w.lock()) c->Close();
  io_.stop();
}

void DaemonImpl::Accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec,
                                asio::local::stream_protocol::socket sock) {
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping_) return;
      spdlog::warn("accept: {}", ec.message());
    } else {
      auto conn = std::make_shared<Connection>(this, std::move(sock), config_.max_request_bytes);
      conns_.remove_if([](auto& w) { return w.expired(); });
      conns_.push_back(conn);
      conn->Start();
    }
    Accept();
  });
}

void DaemonImpl::Handle(const std::shared_ptr<Connection>& conn, ReceivedLine line) {
  if (line.oversized) {
    conn->Send(ErrorReply("request too large (max " + std::to_string(config_.max_request_bytes) +
                          " bytes per line); nothing was done"));
    return;
  }
  if (line.text.empty()) return;  // blank lines are keep-alives
  request_received_ = Clock::now();
  auto req = ParseRequest(line.text);
  if (!req.ok()) {
    conn->Send(ErrorReply(req.error().message + "; send one JSON object per line, e.g. "
                                                "{\"op\":\"ping\"}"));
    return;
  }
  json id = req->contains("id") ? (*req)["id"] : json();
  bool async = false;
  json reply;
  try {
    reply = Dispatch(conn, *req, line.fds, &async);
  } catch (const std::exception& e) {  // a malformed field must never end the daemon
    reply = ErrorReply(std::string("malformed request: ") + e.what());
  }
  if (async) return;
  if (!id.is_null()) reply["id"] = id;
  conn->Send(reply);
}

json DaemonImpl::Dispatch(const std::shared_ptr<Connection>& conn, const json& req,
                          std::vector<UniqueFd>& fds, bool* async) {
  const std::string op = req["op"].get<std::string>();
  auto str = [&](const char* key, const std::string& def = "") -> std::string {
    if (!req.contains(key) || req[key].is_null()) return def;
    if (!req[key].is_string()) throw std::invalid_argument(std::string(key) + " must be a string");
    return req[key].get<std::string>();
  };
  auto uint = [&](const char* key, int64_t def) -> int64_t {
    if (!req.contains(key) || req[key].is_null()) return def;
    if (!req[key].is_number_unsigned() || req[key].get<uint64_t>() > (1u << 30))
      throw std::invalid_argument(std::string(key) + " must be a non-negative integer");
    return req[key].get<int64_t>();
  };
  if (op == "run") return StartCall(conn, req, fds, false, async);
  if (op == "call") return StartCall(conn, req, fds, true, async);
  if (!fds.empty()) return ErrorReply("op " + op + " takes no file descriptors");
  if (op == "ping") {
    json r = OkReply();
    r["version"] = EngineVersion();
    r["protocol"] = kProtocolVersion;
    r["pid"] = ::getpid();
    auto [in_use, why] = pools_->BackendOf(config_.default_template);
    r["backend"] = why.empty() ? in_use : in_use + " (fallback from " + backend_->name() + ")";
    if (!why.empty()) r["backend_fallback_reason"] = why;
    r["policy"] = policy_->engine_name();
    r["default_template"] = config_.default_template;
    r["your_uid"] = conn->cred().uid;
    return r;
  }
  if (op == "ls") {
    json r = OkReply();
    r["domains"] = ListDomains();
    return r;
  }
  if (op == "kill") {
    std::string name = str("name");
    if (named_.Stop(name)) {
      (void)store_->SetDomainState(name, "destroyed");
      return OkReply();
    }
    {
      std::lock_guard lock(calls_mu_);
      for (auto& c : active_) {
        if (c->name == name) {
          c->Kill("killed");
          return OkReply();
        }
      }
    }
    if (pools_->KillReady(name)) return OkReply();
    return ErrorReply("no disposable named '" + name + "' (see `odyssey ls`)");
  }
  if (op == "pool") {
    std::string tmpl = str("template");
    int64_t size = uint("size", -1);
    if (size >= 0) {
      if (tmpl.empty()) tmpl = config_.default_template;
      auto it = templates_.find(tmpl);
      if (it == templates_.end())
        return ErrorReply("template " + tmpl + " does not exist (see `odyssey template ls`)");
      if (size > config_.max_domains)
        return ErrorReply("pool size " + std::to_string(size) + " exceeds max_domains (" +
                          std::to_string(config_.max_domains) + ")");
      it->second.pool_size = size;
      if (auto s = store_->PutTemplate(it->second); !s.ok()) return ErrorReply(s.error().message);
      if (auto s = pools_->SetTarget(tmpl, static_cast<uint32_t>(size)); !s.ok())
        return ErrorReply(s.error().message);
    }
    if (!tmpl.empty() && !templates_.count(tmpl))
      return ErrorReply("template " + tmpl + " does not exist (see `odyssey template ls`)");
    if (req.contains("wait") && req["wait"].is_boolean() && req["wait"].get<bool>()) {
      // Tests and benchmarks: block the loop until in-flight preparation finished.
      pools_->WaitIdle();
    }
    json r = OkReply();
    r["pools"] = PoolStatsJson(tmpl);
    return r;
  }
  if (op == "vm_start") return StartNamedDomain(conn, req, async);
  if (op == "vm_stop") {
    std::string name = str("name");
    if (!named_.Stop(name)) return ErrorReply(NamedDomainNotRunning(name));
    (void)store_->SetDomainState(name, "destroyed");
    return OkReply();
  }
  if (op == "template_ls") {
    json r = OkReply();
    r["templates"] = TemplatesJson();
    return r;
  }
  if (op == "template_add") {
    TemplateRecord t{str("name"), str("kind", "native"), str("root_dir"), uint("pool_size", -1)};
    return StartAddTemplate(conn, req, t, req.contains("rebuild") && req["rebuild"] == true, async);
  }
  if (op == "template_rm") {
    std::string name = str("name");
    if (name == config_.default_template)
      return ErrorReply("template " + name + " is the default disposable template and cannot be "
                        "removed (change default_template in odysseyd.conf first)");
    if (!templates_.erase(name))
      return ErrorReply("template " + name + " does not exist (see `odyssey template ls`)");
    pools_->Remove(name);
    if (auto s = store_->DeleteTemplate(name); !s.ok()) return ErrorReply(s.error().message);
    return OkReply();
  }
  if (op == "policy_check") {
    PolicyQuery q{str("source", "@adminvm"), str("target", "@dispvm"), str("service"),
                  str("argument")};
    if (!ValidServiceName(q.service)) return ErrorReply("policy_check needs a valid service name");
    auto d = policy_->Decide(q);
    if (!d.ok()) return ErrorReply(d.error().message);
    json r = OkReply();
    r["allow"] = d->allow;
    r["action"] = d->action;
    r["rule"] = d->rule;
    r["engine"] = policy_->engine_name();
    return r;
  }
  if (op == "stats") {
    books_->Flush();
    json r = OkReply();
    r["pools"] = PoolStatsJson("");
    r["backend"] = backend_->name();
    r["live_backend_resources"] = backend_->CountLive() + (fallback_ ? fallback_->CountLive() : 0);
    r["in_use"] = pools_->in_use().load();
    r["total_calls"] = total_calls_.load();
    r["uptime_s"] = MsSince(started_) / 1000.0;
    auto decisions = store_->DecisionCount();
    r["policy_decisions"] = decisions.ok() ? *decisions : -1;
    return r;
  }
  if (op == "calls") {
    books_->Flush();
    auto calls = store_->RecentCalls(static_cast<int>(uint("limit", 20)));
    if (!calls.ok()) return ErrorReply(calls.error().message);
    json arr = json::array();
    for (auto& c : *calls) {
      json j = {{"id", c.id},         {"domain", c.domain},     {"kind", c.kind},
                {"what", c.what},     {"uid", c.uid},           {"started_ms", c.started_ms},
                {"pool_hit", c.pool_hit}, {"outcome", c.outcome}};
      j["ended_ms"] = c.ended_ms ? json(*c.ended_ms) : json();
      j["exit_code"] = c.exit_code ? json(*c.exit_code) : json();
      arr.push_back(j);
    }
    json r = OkReply();
    r["calls"] = arr;
    return r;
  }
  if (op == "shutdown") {
    asio::post(io_, [this] { StopOnLoop(); });
    return OkReply();
  }
  return ErrorReply("unknown op '" + op + "' (see engine/admin_protocol.h)");
}

// The backend's checks of a template (vm: hashing the image, a KVM probe of up to 20 s) run
// on a thread of their own; the loop only validates the request and, once they are done,
// records the template and starts its pool. A name is added by one request at a time.
json DaemonImpl::StartAddTemplate(const std::shared_ptr<Connection>& conn, const json& req,
                                  const TemplateRecord& t, bool rebuild, bool* async) {
  if (adding_.count(t.name)) return ErrorReply("template " + t.name + " is being added already");
  if (auto s = ValidateNewTemplate(t); !s.ok()) return ErrorReply(s.error().message);
  adding_.insert(t.name);
  json id = req.contains("id") ? req["id"] : json();
  {
    std::lock_guard lock(calls_mu_);
    running_threads_++;  // shutdown waits for the check
  }
  std::thread([this, conn, t, rebuild, id] {
    auto facts = backend_->CheckTemplate({t.name, t.kind, t.root_dir}, rebuild);
    asio::post(io_, [this, conn, t, facts = std::move(facts), id]() mutable {
      adding_.erase(t.name);
      Status s = facts.ok() ? AddTemplate(std::move(t), *facts) : Status(facts.error());
      json r = s.ok() ? OkReply() : ErrorReply(s.error().message);
      if (!id.is_null()) r["id"] = id;
      conn->Send(r);
    });
    std::lock_guard lock(calls_mu_);
    running_threads_--;
    calls_cv_.notify_all();
  }).detach();
  *async = true;
  return json();
}

Status DaemonImpl::AddTemplate(TemplateRecord t, const TemplateFacts& facts) {
  ODYSSEY_TRY(ValidateNewTemplate(t));  // again: the loop served other requests meanwhile
  t.accel = facts.accel;
  t.image_sha256 = facts.image_sha256;
  ODYSSEY_TRY(store_->PutTemplate(t));
  templates_[t.name] = t;
  pools_->Configure({t.name, t.kind, t.root_dir}, PoolTarget(t));
  return OkStatus();
}

Status DaemonImpl::ValidateNewTemplate(const TemplateRecord& t) {
  if (!IsValidEngineDomainName(t.name))
    return Error{"invalid template name '" + t.name + "': template names are " +
                     kEngineDomainNameRule, EINVAL};
  if (templates_.count(t.name))
    return Error{"template " + t.name + " already exists (remove it first with `odyssey template rm`)",
                 EEXIST};
  if (named_.Exists(t.name))
    return Error{"'" + t.name + "' is a running named domain (stop it with `odyssey vm stop " + t.name + "`)",
                 EEXIST};
  if (t.kind == "native" && !t.root_dir.empty()) {
    struct stat st;
    if (t.root_dir[0] != '/' || ::stat(t.root_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Error{"template root " + t.root_dir + " is not an absolute path to a directory", ENOTDIR};
    for (const char* d : {"/tmp", "/home", "/proc", "/bin/sh"})
      if (::access((t.root_dir + d).c_str(), F_OK) != 0)
        return Error{"template root " + t.root_dir + " lacks " + d +
                         " (a template tree needs /tmp, /home, /proc and /bin/sh)", ENOENT};
  }
  if (t.pool_size > static_cast<int64_t>(config_.max_domains))
    return Error{"pool size exceeds max_domains", EINVAL};
  return OkStatus();
}

json DaemonImpl::StartCall(const std::shared_ptr<Connection>& conn, const json& req,
                           std::vector<UniqueFd>& fds, bool is_service, bool* async) {
  if (stopping_) return ErrorReply("odysseyd is shutting down; retry in a moment");
  if (fds.size() != 3)
    return ErrorReply("run/call needs exactly 3 descriptors (stdin, stdout, stderr) sent with the "
                      "request; got " + std::to_string(fds.size()));
  CallSpec spec;
  std::string what, service = "qubes.VMShell", arg;
  if (is_service) {
    if (!req.contains("service") || !req["service"].is_string())
      return ErrorReply("call needs a string field \"service\"");
    service = req["service"].get<std::string>();
    if (req.contains("arg") && !req["arg"].is_string())
      return ErrorReply("call: \"arg\" must be a string");
    arg = req.value("arg", "");
    if (!ValidServiceName(service) || !ValidServiceArg(arg))
      return ErrorReply("invalid service name or argument (allowed: [0-9A-Za-z._-], arg also + @)");
    spec.service = service;
    spec.service_arg = arg;
    what = service + (arg.empty() ? "" : "+" + arg);
  } else {
    if (!req.contains("argv") || !req["argv"].is_array() || req["argv"].empty())
      return ErrorReply("run needs a non-empty array of strings \"argv\"");
    for (auto& a : req["argv"]) {
      if (!a.is_string()) return ErrorReply("run: every argv element must be a string");
      std::string s = a.get<std::string>();
      if (s.find('\0') != std::string::npos) return ErrorReply("run: argv contains a NUL byte");
      spec.argv.push_back(s);
      what += (what.empty() ? "" : " ") + s;
    }
  }
  std::string tmpl = config_.default_template;
  std::string target = "@dispvm";
  if (req.contains("template") && !req["template"].is_null()) {
    if (!req["template"].is_string()) return ErrorReply("\"template\" must be a string");
    tmpl = req["template"].get<std::string>();
    target = "@dispvm:" + tmpl;
  }
  if (!templates_.count(tmpl))
    return ErrorReply("template " + tmpl + " does not exist (see `odyssey template ls`; add it "
                      "with `odyssey template add " + tmpl + " --root DIR`)");
  NamedDomains::EntryPtr named;  // "vm": a named persistent domain instead of a disposable
  if (req.contains("vm") && !req["vm"].is_null()) {
    if (!req["vm"].is_string()) return ErrorReply("\"vm\" must be a string");
    if (req.contains("template") && !req["template"].is_null())
      return ErrorReply("a call goes to a disposable of \"template\" or to the named domain \"vm\", not both");
    target = req["vm"].get<std::string>();
    if (!(named = named_.Find(target))) return ErrorReply(NamedDomainNotRunning(target));
    tmpl = named->template_name;
  }
  uint32_t timeout_s = config_.call_timeout_s;
  if (req.contains("timeout_s") && !req["timeout_s"].is_null()) {
    if (!req["timeout_s"].is_number_unsigned() || req["timeout_s"].get<uint64_t>() > 86400 * 7)
      return ErrorReply("\"timeout_s\" must be an integer number of seconds (max 604800)");
    timeout_s = req["timeout_s"].get<uint32_t>();
  }
  auto gui = ParseGuiRequest(req, conn->cred().uid, conn->cred().gid);
  if (!gui.ok()) return ErrorReply(gui.error().message);
  // Policy first: source @adminvm (the host user), target the disposable, the service.
  PolicyQuery q{"@adminvm", target, service, arg};
  auto decision = policy_->Decide(q);
  if (!decision.ok()) return ErrorReply("policy error: " + decision.error().message);
  books_->Post([st = store_.get(), rec = PolicyDecisionRecord{q.source, q.target, q.service,
                                                             q.argument, decision->action,
                                                             decision->rule}] {
    (void)st->RecordDecision(rec);
  });
  if (!decision->allow)
    return ErrorReply("call denied by policy: " + service + (arg.empty() ? "" : "+" + arg) +
                      " from " + q.source + " to " + target + " (rule " + decision->rule +
                      "; change the policy there)");

  spec.stdin_fd = std::move(fds[0]);
  spec.stdout_fd = std::move(fds[1]);
  spec.stderr_fd = std::move(fds[2]);
  auto ctx = std::make_shared<CallCtx>();
  ctx->template_name = tmpl;
  ctx->what = what;
  ctx->uid = conn->cred().uid;
  ctx->started_ms = StateStore::NowMs();
  ctx->gui = std::move(*gui);
  ctx->received = request_received_;
  conn->calls().push_back(ctx);
  {
    std::lock_guard lock(calls_mu_);
    active_.push_back(ctx);
    running_threads_++;
  }
  json id = req.contains("id") ? req["id"] : json();
  ctx->queued = Clock::now();
  if (named) {
    ctx->name = target;
    workers_.Run([this, conn, ctx, spec = std::make_shared<CallSpec>(std::move(spec)), id,
                  named] { RunNamedCall(conn, ctx, std::move(*spec), id, named); });
  } else {
    workers_.Run([this, conn, ctx, spec = std::make_shared<CallSpec>(std::move(spec)), id,
                  timeout_s] { RunCall(conn, ctx, std::move(*spec), id, timeout_s); });
  }
  *async = true;
  return json();
}

void DaemonImpl::RunCall(std::shared_ptr<Connection> conn, CallCtxPtr ctx, CallSpec spec,
                         json id, uint32_t timeout_s) {
  auto t0 = Clock::now();
  auto reply = [&](json j) {  // straight from this thread (Connection::Send)
    if (!id.is_null()) j["id"] = id;
    conn->Send(j);
  };
  bool hit = false;
  auto taken = pools_->Take(ctx->template_name, &hit);
  auto finish = [&] {
    asio::post(io_, [conn, ctx] { conn->calls().remove(ctx); });
    std::lock_guard lock(calls_mu_);
    active_.remove(ctx);
    running_threads_--;
    calls_cv_.notify_all();
  };
  if (!taken.ok()) {
    reply(ErrorReply("no disposable available: " + taken.error().message));
    finish();
    return;
  }
  MemberPtr member = std::move(*taken);
  double prepare_ms = MsSince(t0);
  {
    std::lock_guard lock(ctx->mu);
    ctx->name = member->name();
    ctx->member = member.get();
    if (ctx->killed) member->Kill();
  }
  total_calls_++;
  StateStore* store = store_.get();
  // In order after the pool's own "ready" record of this member (same queue).
  books_->Post([store, rec = DomainRecord{member->name(), member->template_name(), "running",
                                          member->handle(), 0}] { (void)store->PutDomain(rec); });
  // Written before the call runs, so a crash mid-call leaves it to be marked interrupted.
  auto call_id = store_->BeginCall({0, member->name(), spec.service.empty() ? "run" : "call",
                                    ctx->what, ctx->uid, ctx->started_ms, {}, {}, hit, ""});
  json started = OkReply();
  started["event"] = "started";
  started["name"] = member->name();
  started["template"] = member->template_name();
  started["pool_hit"] = hit;
  started["prepare_ms"] = prepare_ms;
  reply(started);
  if (timeout_s > 0) {
    asio::post(io_, [this, ctx, timeout_s] {
      ctx->timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(timeout_s));
      ctx->timer->async_wait([ctx](const boost::system::error_code& ec) {
        if (!ec) ctx->Kill("timeout");
      });
    });
  }
  auto gui = AttachGui(ctx->gui, *member, &spec, [ctx] { ctx->Kill("windows closed"); });
  CallTimings timings;
  spec.timings = &timings;
  auto t_call = Clock::now();
  auto code = member->Call(std::move(spec));
  gui.reset();
  double call_ms = MsSince(t0);
  auto t_end = Clock::now();
  {
    std::lock_guard lock(ctx->mu);
    ctx->member = nullptr;
  }
  const std::string name = member->name();
  std::string outcome;
  {
    std::lock_guard lock(ctx->mu);
    outcome = ctx->killed ? ctx->kill_reason : "exited";
  }
  asio::post(io_, [ctx] {
    if (ctx->timer) ctx->timer->cancel();
  });
  json done = OkReply();
  done["event"] = "exit";
  done["name"] = name;
  done["destroyed"] = true;  // taken out of service; its teardown is under way (Retire)
  done["outcome"] = outcome;
  done["elapsed_ms"] = call_ms;
  // Where the time went (benchmarks report it): on the loop thread from the complete request
  // line to the hand-off (parse, checks, policy), the hand-off to this call thread, take from
  // the pool, bookkeeping before the call, the call itself (call = resume + agent: the thaw,
  // then the qrexec call: data port, the agent's fork+exec of the command, its output).
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  done["phases_ms"] = {{"loop", ms(ctx->queued - ctx->received)}, {"handoff", ms(t0 - ctx->queued)},
                       {"take", prepare_ms}, {"setup", ms(t_call - t0) - prepare_ms},
                       {"call", ms(t_end - t_call)}};
  if (timings.resume_ms >= 0) {
    done["phases_ms"]["resume"] = timings.resume_ms;
    done["phases_ms"]["agent"] = ms(t_end - t_call) - timings.resume_ms;
  }
  std::optional<int> end_code;
  if (code.ok()) {
    int c = *code;
    if (outcome == "timeout") c = 124;
    done["code"] = c;
    end_code = c;
  } else {
    done = ErrorReply("call in " + name + " failed: " + code.error().message);
    done["event"] = "exit";
    done["code"] = 125;
    outcome = "failed";
  }
  // The caller has its exit code first; the record, the teardown and the refill follow.
  reply(done);
  if (call_id.ok())
    books_->Post([store, id = *call_id, end_code, outcome] { (void)store->EndCall(id, end_code, outcome); });
  spdlog::debug("call {} in {}: {} ({:.2f} ms, pool {})", ctx->what, name, outcome,
                call_ms, hit ? "hit" : "miss");
  // Destroyed on the pool's tasks (WaitIdle counts it), off this thread.
  Bookkeeper* books = books_.get();
  pools_->Retire(std::move(member), [store, books, name](double destroy_ms) {
    books->Post([store, name] { (void)store->SetDomainState(name, "destroyed"); });
    spdlog::debug("destroyed {} in {:.2f} ms", name, destroy_ms);
  });
  finish();
}

// ---- named persistent domains (named_domains.h) ----

json DaemonImpl::StartNamedDomain(const std::shared_ptr<Connection>& conn, const json& req,
                                  bool* async) {
  if (stopping_) return ErrorReply("odysseyd is shutting down; retry in a moment");
  if (!req.contains("name") || !req["name"].is_string()) return ErrorReply("vm_start needs a string field \"name\"");
  const std::string name = req["name"].get<std::string>();
  std::string tmpl = config_.default_template;
  if (req.contains("template") && !req["template"].is_null()) {
    if (!req["template"].is_string()) return ErrorReply("\"template\" must be a string");
    tmpl = req["template"].get<std::string>();
  }
  if (!IsValidEngineDomainName(name) || NamedDomains::ReservedName(name))
    return ErrorReply("invalid domain name '" + name + "': domain names are " + kEngineDomainNameRule +
                      ", and not dispN (the disposables' names)");
  if (templates_.count(name))
    return ErrorReply("'" + name + "' is a template; a named domain needs a name of its own (the "
                      "policy could not tell @dispvm:" + name + " from " + name + ")");
  auto it = templates_.find(tmpl);
  if (it == templates_.end())
    return ErrorReply("template " + tmpl + " does not exist (see `odyssey template ls`)");
  if (named_.Count() >= config_.max_domains)
    return ErrorReply("too many named domains (max_domains " + std::to_string(config_.max_domains) + ")");
  // Named domains serve many calls: only a backend whose members keep their agent running.
  auto [in_use, fallback_reason] = pools_->BackendOf(tmpl);
  if (backend_->name() == "process" || !fallback_reason.empty() || it->second.kind != "native")
    return ErrorReply("named domains need the HAL backend with a native template (their qrexec agent "
                      "serves many calls); template " + tmpl + " runs on " + in_use +
                      (fallback_reason.empty() ? "" : " (" + fallback_reason + ")") +
                      ", whose disposables run one command each");
  TemplateInfo info{it->second.name, it->second.kind, it->second.root_dir};
  json id = req.contains("id") ? req["id"] : json();
  {
    std::lock_guard lock(calls_mu_);
    running_threads_++;  // shutdown waits for the start, then stops what it started
  }
  std::thread([this, conn, info, name, id] {
    auto t0 = Clock::now();
    auto started = named_.Start(backend_.get(), info, name, StateStore::NowMs());
    json r;
    if (started.ok()) {
      auto& e = **started;
      (void)store_->PutDomain({name, info.name, "persistent", e.member->handle(), 0});
      spdlog::info("named domain {} started from template {}", name, info.name);
      r = OkReply();
      r["name"] = name;
      r["template"] = info.name;
      r["start_ms"] = MsSince(t0);
    } else {
      r = ErrorReply(started.error().message);
    }
    if (!id.is_null()) r["id"] = id;
    asio::post(io_, [conn, r] { conn->Send(r); });
    std::lock_guard lock(calls_mu_);
    running_threads_--;
    calls_cv_.notify_all();
  }).detach();
  *async = true;
  return json();
}

// A call into a named domain: like RunCall, but the member stays (no pool, no Retire), and
// the call cannot be killed on its own (the domain's agent serves other calls too): a
// timeout or a client hang-up leaves it to end by itself; `odyssey vm stop` ends them all.
void DaemonImpl::RunNamedCall(std::shared_ptr<Connection> conn, CallCtxPtr ctx, CallSpec spec,
                              json id, NamedDomains::EntryPtr domain) {
  auto t0 = Clock::now();
  auto reply = [&](json j) {  // straight from this thread (Connection::Send)
    if (!id.is_null()) j["id"] = id;
    conn->Send(j);
  };
  domain->calls++;
  total_calls_++;
  auto call_id = store_->BeginCall({0, domain->name, spec.service.empty() ? "run" : "call",
                                    ctx->what, ctx->uid, ctx->started_ms, {}, {}, true, ""});
  json started = OkReply();
  started["event"] = "started";
  started["name"] = domain->name;
  started["template"] = domain->template_name;
  started["pool_hit"] = false;
  started["persistent"] = true;
  started["prepare_ms"] = 0.0;
  reply(started);
  auto gui = AttachGui(ctx->gui, *domain->member, &spec, [] {});
  auto code = domain->member->Call(std::move(spec));
  gui.reset();
  json done = OkReply();
  done["event"] = "exit";
  done["name"] = domain->name;
  done["destroyed"] = false;
  done["outcome"] = "exited";
  done["elapsed_ms"] = MsSince(t0);
  if (code.ok()) {
    done["code"] = *code;
  } else {
    done = ErrorReply("call in " + domain->name + " failed: " + code.error().message +
                      (named_.Find(domain->name) ? "" : " (the domain was stopped)"));
    done["event"] = "exit";
    done["code"] = 125;
  }
  domain->calls--;
  reply(done);
  if (call_id.ok())
    books_->Post([st = store_.get(), id = *call_id, c = code.ok() ? std::optional<int>(*code) : std::nullopt] {
      (void)st->EndCall(id, c, c ? "exited" : "failed");
    });
  asio::post(io_, [conn, ctx] { conn->calls().remove(ctx); });
  std::lock_guard lock(calls_mu_);
  active_.remove(ctx);
  running_threads_--;
  calls_cv_.notify_all();
}

json DaemonImpl::ListDomains() {
  json arr = json::array();
  {
    std::lock_guard lock(calls_mu_);
    for (auto& c : active_) {
      std::lock_guard l2(c->mu);
      if (c->name.empty()) continue;
      json j = {{"name", c->name}, {"template", c->template_name}, {"state", "running"},
                {"what", c->what},  {"uid", c->uid},                {"started_ms", c->started_ms}};
      if (c->member) {
        MemberUsage u = c->member->Usage();
        j["memory_bytes"] = u.memory_bytes;
        j["memory_pss_bytes"] = u.memory_pss_bytes;
      }
      arr.push_back(j);
    }
  }
  for (auto& [name, tmpl] : pools_->ReadyMembers())
    arr.push_back({{"name", name}, {"template", tmpl}, {"state", "ready"}, {"what", ""}});
  for (auto& e : named_.List()) {
    MemberUsage u = e->member->Usage();
    int calls = e->calls.load();
    arr.push_back({{"name", e->name}, {"template", e->template_name}, {"state", "persistent"},
                   {"what", std::to_string(calls) + (calls == 1 ? " call" : " calls") + " running"},
                   {"started_ms", e->started_ms}, {"memory_bytes", u.memory_bytes},
                   {"memory_pss_bytes", u.memory_pss_bytes}});
  }
  return arr;
}

json DaemonImpl::PoolStatsJson(const std::string& only) {
  json arr = json::array();
  for (auto& s : pools_->Stats()) {
    if (!only.empty() && s.template_name != only) continue;
    arr.push_back({{"template", s.template_name}, {"target", s.target}, {"ready", s.ready},
                   {"preparing", s.preparing}, {"hits", s.hits}, {"misses", s.misses},
                   {"prepared", s.prepared}, {"failures", s.failures},
                   {"memory_bytes", s.memory_bytes}, {"memory_pss_bytes", s.memory_pss_bytes},
                   {"last_error", s.last_error}, {"backend", s.backend},
                   {"fallback_reason", s.fallback_reason}});
  }
  return arr;
}

json DaemonImpl::TemplatesJson() {
  json arr = json::array();
  for (auto& [name, t] : templates_) {
    arr.push_back({{"name", name}, {"kind", t.kind}, {"accel", t.accel},
                   {"root_dir", t.root_dir.empty() ? "(host)" : t.root_dir},
                   {"pool_size", PoolTarget(t)},
                   {"default", name == config_.default_template}});
  }
  return arr;
}

}  // namespace

const char* EngineVersion() { return "0.1.0"; }

Result<std::unique_ptr<Daemon>> Daemon::Create(const Config& config) {
  auto d = std::make_unique<DaemonImpl>(config);
  auto s = d->Init();
  if (!s.ok()) return s.error();
  return std::unique_ptr<Daemon>(std::move(d));
}

}  // namespace odyssey::engine
