// Audit log: every decision appended to an sqlite3 table. A failure to write is reported
// to the caller, which turns the decision into deny (fail closed).
#include <sqlite3.h>

#include <chrono>
#include <ctime>

#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {
namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS decisions ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " time TEXT NOT NULL,"
    " unix_ms INTEGER NOT NULL,"
    " source TEXT NOT NULL,"
    " intended_target TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " service_and_arg TEXT NOT NULL,"
    " rule_file TEXT NOT NULL,"
    " rule_line INTEGER NOT NULL,"
    " result TEXT NOT NULL,"
    " reason TEXT NOT NULL)";

sqlite3* Db(void* p) { return static_cast<sqlite3*>(p); }

std::string DbName(sqlite3* db) {
  const char* f = sqlite3_db_filename(db, "main");
  return f ? f : "";
}

Error SqlError(sqlite3* db, const std::string& what, const std::string& path) {
  return Error{what + "(" + path + "): " + (db ? sqlite3_errmsg(db) : "out of memory"), 0};
}

// "2026-11-30T08:19:02.123Z" and milliseconds since the epoch.
std::pair<std::string, int64_t> Now() {
  auto now = std::chrono::system_clock::now();
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return {buf, ms};
}

}  // namespace

AuditLog::AuditLog(void* db) : db_(db) {}

AuditLog::~AuditLog() { sqlite3_close_v2(Db(db_)); }

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    Error e = SqlError(db, "opening audit log", path);
    sqlite3_close_v2(db);
    return e;
  }
  std::unique_ptr<AuditLog> log(new AuditLog(db));
  sqlite3_busy_timeout(db, 5000);
  const char* setup[] = {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", kSchema};
  for (const char* sql : setup) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db, "preparing audit log", path);
  }
  return log;
}

Status AuditLog::Append(const AuditRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3* db = Db(db_);
  static constexpr const char* kInsert =
      "INSERT INTO decisions (time, unix_ms, source, intended_target, target, service_and_arg, rule_file, "
      "rule_line, result, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, kInsert, -1, &stmt, nullptr) != SQLITE_OK) {
    return SqlError(db, "writing audit log", DbName(db));
  }
  auto [time, ms] = Now();
  auto text = [&](int i, const std::string& s) { sqlite3_bind_text(stmt, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); };
  text(1, time);
  sqlite3_bind_int64(stmt, 2, ms);
  text(3, r.source);
  text(4, r.intended_target);
  text(5, r.target);
  text(6, r.service_and_arg);
  text(7, r.rule.file);
  sqlite3_bind_int(stmt, 8, r.rule.line);
  text(9, std::string(ActionName(r.result)));
  text(10, r.reason);
  int rc = sqlite3_step(stmt);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return SqlError(db, "writing audit log", DbName(db));
  return OkStatus();
}

}  // namespace odyssey::qrexec::policy
