// DomainCatalog read from a JSON file (until the engine provides its own catalog).
#include <algorithm>
#include <cctype>
#include <map>

#include <nlohmann/json.hpp>

#include "base/io.h"
#include "qrexec/policy/parser.h"
#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {
namespace {

constexpr size_t kMaxCatalogBytes = 16 << 20;

class MapCatalog final : public DomainCatalog {
 public:
  explicit MapCatalog(std::map<std::string, DomainInfo, std::less<>> domains) : domains_(std::move(domains)) {
    for (const auto& [name, info] : domains_) {
      if (!info.uuid.empty()) by_uuid_[info.uuid] = name;
      if (info.is_admin()) admin_ = name;
    }
  }

  std::optional<DomainInfo> FindByName(std::string_view name) const override {
    auto it = domains_.find(name);
    if (it == domains_.end()) return std::nullopt;
    return it->second;
  }

  std::optional<DomainInfo> FindByUuid(std::string_view uuid) const override {
    std::string lower(uuid);
    for (char& c : lower) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    auto it = by_uuid_.find(lower);
    if (it == by_uuid_.end()) return std::nullopt;
    return FindByName(it->second);
  }

  DomainInfo AdminDomain() const override { return domains_.find(admin_)->second; }

 private:
  std::map<std::string, DomainInfo, std::less<>> domains_;
  std::map<std::string, std::string, std::less<>> by_uuid_;
  std::string admin_;
};

Error Bad(std::string_view origin, const std::string& where, const std::string& what) {
  return Error{std::string(origin) + ": " + where + ": " + what, 0};
}

Result<std::string> GetString(const nlohmann::json& v, std::string_view origin, const std::string& where) {
  if (!v.is_string()) return Bad(origin, where, "expected a string");
  return v.get<std::string>();
}

Result<DomainInfo> ParseDomain(const std::string& name, const nlohmann::json& obj, std::string_view origin) {
  std::string where = "domain '" + name + "'";
  if (!IsValidDomainName(name)) return Bad(origin, where, "invalid domain name");
  if (!obj.is_object()) return Bad(origin, where, "expected an object");
  DomainInfo d;
  d.name = name;
  d.type = "AppVM";
  for (const auto& [key, value] : obj.items()) {
    std::string at = where + " key '" + key + "'";
    if (key == "type" || key == "uuid" || key == "default_dispvm" || key == "dispvm_template") {
      auto s = GetString(value, origin, at);
      if (!s.ok()) return s.error();
      if (key == "type") {
        if (s->empty() || !std::all_of(s->begin(), s->end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }))
          return Bad(origin, at, "invalid type '" + *s + "'");
        d.type = *s;
      } else if (key == "uuid") {
        if (!s->empty() && !IsValidUuid(*s)) return Bad(origin, at, "invalid uuid '" + *s + "'");
        d.uuid = *s;
        for (char& c : d.uuid) {
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        }
      } else {
        if (!s->empty() && !IsValidDomainName(*s)) return Bad(origin, at, "invalid domain name '" + *s + "'");
        (key == "default_dispvm" ? d.default_dispvm : d.dispvm_template) = *s;
      }
    } else if (key == "template_for_dispvms") {
      if (!value.is_boolean()) return Bad(origin, at, "expected true or false");
      d.template_for_dispvms = value.get<bool>();
    } else if (key == "tags") {
      if (!value.is_array()) return Bad(origin, at, "expected an array of strings");
      for (const auto& tag : value) {
        auto s = GetString(tag, origin, at);
        if (!s.ok()) return s.error();
        if (!IsValidTag(*s)) return Bad(origin, at, "invalid tag '" + *s + "'");
        d.tags.push_back(*s);
      }
      std::sort(d.tags.begin(), d.tags.end());
      d.tags.erase(std::unique(d.tags.begin(), d.tags.end()), d.tags.end());
    } else {
      return Bad(origin, where, "unknown key '" + key + "'");
    }
  }
  return d;
}

}  // namespace

Result<DomainCatalogPtr> ParseJsonCatalog(std::string_view json, std::string_view origin) {
  nlohmann::json root = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Error{std::string(origin) + ": not valid JSON", 0};
  if (!root.is_object()) return Bad(origin, "top level", "expected an object");
  std::map<std::string, DomainInfo, std::less<>> domains;
  for (const auto& [key, value] : root.items()) {
    if (key != "domains") return Bad(origin, "top level", "unknown key '" + key + "'");
    if (!value.is_object()) return Bad(origin, "domains", "expected an object");
    for (const auto& [name, obj] : value.items()) {
      auto d = ParseDomain(name, obj, origin);
      if (!d.ok()) return d.error();
      domains[name] = std::move(d.value());
    }
  }
  int admins = 0;
  std::map<std::string, std::string> uuids;
  for (const auto& [name, d] : domains) {
    if (d.is_admin()) ++admins;
    if (!d.uuid.empty() && !uuids.emplace(d.uuid, name).second)
      return Bad(origin, "domain '" + name + "'", "uuid '" + d.uuid + "' is also used by '" + uuids[d.uuid] + "'");
  }
  if (admins > 1) return Bad(origin, "domains", "more than one domain has type AdminVM");
  if (admins == 0) {
    if (domains.count("dom0")) return Bad(origin, "domain 'dom0'", "dom0 must have type AdminVM");
    DomainInfo admin;
    admin.name = "dom0";
    admin.type = "AdminVM";
    domains["dom0"] = admin;
  }
  return DomainCatalogPtr(std::make_shared<MapCatalog>(std::move(domains)));
}

Result<DomainCatalogPtr> LoadJsonCatalog(const std::string& path) {
  auto text = ReadFileToString(path, kMaxCatalogBytes);
  if (!text.ok()) return text.error().Wrap("reading domain catalog");
  return ParseJsonCatalog(*text, path);
}

DomainCatalogPtr AdminOnlyCatalog() {
  auto catalog = ParseJsonCatalog("{}", "built-in");
  ODYSSEY_CHECK(catalog.ok());
  return catalog.value();
}

}  // namespace odyssey::qrexec::policy
