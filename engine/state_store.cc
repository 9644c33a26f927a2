#include "engine/state_store.h"

#include <chrono>
#include <memory>

namespace odyssey::engine {
namespace {

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS templates(
  name TEXT PRIMARY KEY, kind TEXT NOT NULL, root_dir TEXT NOT NULL, pool_size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS domains(
  name TEXT PRIMARY KEY, template TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls(
  id INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, kind TEXT NOT NULL,
  what TEXT NOT NULL, uid INTEGER NOT NULL, started_ms INTEGER NOT NULL, ended_ms INTEGER,
  exit_code INTEGER, pool_hit INTEGER NOT NULL, outcome TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS policy_decisions(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, source TEXT NOT NULL,
  target TEXT NOT NULL, service TEXT NOT NULL, argument TEXT NOT NULL, result TEXT NOT NULL,
  rule TEXT NOT NULL);
)sql";

// RAII prepared statement with positional binding helpers.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); return *this; }
  Stmt& BindNull(int i) { sqlite3_bind_null(s_, i); return *this; }
  int Step() { return sqlite3_step(s_); }
  std::string Text(int col) {
    auto* p = sqlite3_column_text(s_, col);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  int64_t Int(int col) { return sqlite3_column_int64(s_, col); }
  bool IsNull(int col) { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

Error DbError(sqlite3* db, const std::string& what) {
  return Error{"state store: " + what + ": " + sqlite3_errmsg(db), EIO};
}

}  // namespace

int64_t StateStore::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    Error e{"state store: cannot open " + path + ": " + (db ? sqlite3_errmsg(db) : "out of memory") +
                " (check that the state directory is writable)", EIO};
    sqlite3_close(db);
    return e;
  }
  std::unique_ptr<StateStore> store(new StateStore(db));
  sqlite3_busy_timeout(db, 5000);
  ODYSSEY_TRY(store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  ODYSSEY_TRY(store->Exec(kSchema));
  ODYSSEY_TRY(store->AddTemplateImageColumns());
  return store;
}

StateStore::~StateStore() { sqlite3_close(db_); }

Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Error{"state store: " + msg, EIO};
  }
  return OkStatus();
}

// Schema v2: VM templates record their image checksum and accelerator. Older stores gain
// the columns (empty for every existing template).
Status StateStore::AddTemplateImageColumns() {
  std::lock_guard lock(mu_);
  bool has_accel = false;
  {
    Stmt s(db_, "SELECT name FROM pragma_table_info('templates')");
    if (!s.ok()) return DbError(db_, "reading the templates schema");
    while (s.Step() == SQLITE_ROW) has_accel |= s.Text(0) == "accel";
  }
  if (has_accel) return OkStatus();
  return Exec(
      "ALTER TABLE templates ADD COLUMN accel TEXT NOT NULL DEFAULT '';"
      "ALTER TABLE templates ADD COLUMN image_sha256 TEXT NOT NULL DEFAULT '';");
}

Status StateStore::PutTemplate(const TemplateRecord& t) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO templates(name, kind, root_dir, pool_size, accel, image_sha256) "
         "VALUES(?,?,?,?,?,?)");
  s.Bind(1, t.name).Bind(2, t.kind).Bind(3, t.root_dir).Bind(4, t.pool_size).Bind(5, t.accel)
      .Bind(6, t.image_sha256);
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "saving template " + t.name);
  return OkStatus();
}

Status StateStore::DeleteTemplate(const std::string& name) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM templates WHERE name = ?");
  s.Bind(1, name);
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "deleting template " + name);
  return OkStatus();
}

Result<std::vector<TemplateRecord>> StateStore::Templates() {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT name, kind, root_dir, pool_size, accel, image_sha256 FROM templates ORDER BY name");
  if (!s.ok()) return DbError(db_, "listing templates");
  std::vector<TemplateRecord> out;
  while (s.Step() == SQLITE_ROW)
    out.push_back({s.Text(0), s.Text(1), s.Text(2), s.Int(3), s.Text(4), s.Text(5)});
  return out;
}

Status StateStore::PutDomain(const DomainRecord& d) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO domains(name, template, state, pid, created_ms, updated_ms) "
         "VALUES(?,?,?,?,?,?)");
  s.Bind(1, d.name).Bind(2, d.template_name).Bind(3, d.state).Bind(4, d.pid)
      .Bind(5, d.created_ms ? d.created_ms : NowMs()).Bind(6, NowMs());
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "saving domain " + d.name);
  return OkStatus();
}

Status StateStore::SetDomainState(const std::string& name, const std::string& state) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "UPDATE domains SET state = ?, updated_ms = ? WHERE name = ?");
  s.Bind(1, state).Bind(2, NowMs()).Bind(3, name);
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "updating domain " + name);
  return OkStatus();
}

Result<std::vector<DomainRecord>> StateStore::LiveDomains() {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT name, template, state, pid, created_ms FROM domains WHERE state != 'destroyed' "
         "ORDER BY created_ms");
  if (!s.ok()) return DbError(db_, "listing domains");
  std::vector<DomainRecord> out;
  while (s.Step() == SQLITE_ROW)
    out.push_back({s.Text(0), s.Text(1), s.Text(2), s.Int(3), s.Int(4)});
  return out;
}

Result<int64_t> StateStore::BeginCall(const CallRecord& c) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT INTO calls(domain, kind, what, uid, started_ms, pool_hit) VALUES(?,?,?,?,?,?)");
  s.Bind(1, c.domain).Bind(2, c.kind).Bind(3, c.what).Bind(4, c.uid)
      .Bind(5, c.started_ms ? c.started_ms : NowMs()).Bind(6, int64_t{c.pool_hit});
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "recording call");
  return sqlite3_last_insert_rowid(db_);
}

Status StateStore::EndCall(int64_t id, std::optional<int> exit_code, const std::string& outcome) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "UPDATE calls SET ended_ms = ?, exit_code = ?, outcome = ? WHERE id = ?");
  s.Bind(1, NowMs());
  if (exit_code) s.Bind(2, int64_t{*exit_code}); else s.BindNull(2);
  s.Bind(3, outcome).Bind(4, id);
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "ending call");
  return OkStatus();
}

Result<std::vector<CallRecord>> StateStore::RecentCalls(int limit) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT id, domain, kind, what, uid, started_ms, ended_ms, exit_code, pool_hit, outcome "
         "FROM calls ORDER BY id DESC LIMIT ?");
  s.Bind(1, int64_t{limit});
  if (!s.ok()) return DbError(db_, "listing calls");
  std::vector<CallRecord> out;
  while (s.Step() == SQLITE_ROW) {
    CallRecord c;
    c.id = s.Int(0); c.domain = s.Text(1); c.kind = s.Text(2); c.what = s.Text(3);
    c.uid = s.Int(4); c.started_ms = s.Int(5);
    if (!s.IsNull(6)) c.ended_ms = s.Int(6);
    if (!s.IsNull(7)) c.exit_code = static_cast<int>(s.Int(7));
    c.pool_hit = s.Int(8) != 0;
    c.outcome = s.Text(9);
    out.push_back(std::move(c));
  }
  return out;
}

Status StateStore::RecordDecision(const PolicyDecisionRecord& d) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT INTO policy_decisions(at_ms, source, target, service, argument, result, rule) "
         "VALUES(?,?,?,?,?,?,?)");
  s.Bind(1, NowMs()).Bind(2, d.source).Bind(3, d.target).Bind(4, d.service)
      .Bind(5, d.argument).Bind(6, d.result).Bind(7, d.rule);
  if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "recording policy decision");
  return OkStatus();
}

Result<int64_t> StateStore::DecisionCount() {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT COUNT(*) FROM policy_decisions");
  if (!s.ok() || s.Step() != SQLITE_ROW) return DbError(db_, "counting decisions");
  return s.Int(0);
}

Result<std::pair<int, int>> StateStore::MarkAllInterrupted() {
  std::lock_guard lock(mu_);
  int domains = 0, calls = 0;
  {
    Stmt s(db_, "UPDATE domains SET state = 'destroyed', updated_ms = ? WHERE state != 'destroyed'");
    s.Bind(1, NowMs());
    if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "closing domains");
    domains = sqlite3_changes(db_);
  }
  {
    Stmt s(db_, "UPDATE calls SET ended_ms = ?, outcome = 'interrupted' WHERE ended_ms IS NULL");
    s.Bind(1, NowMs());
    if (!s.ok() || s.Step() != SQLITE_DONE) return DbError(db_, "closing calls");
    calls = sqlite3_changes(db_);
  }
  return std::make_pair(domains, calls);
}

}  // namespace odyssey::engine
