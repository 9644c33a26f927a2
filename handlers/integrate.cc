#include "handlers/integrate.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "base/io.h"

namespace odyssey::handlers {
namespace {

constexpr const char* kMarker = "X-Odyssey=true";
constexpr const char* kThunarBegin = "<!-- odyssey-begin";
constexpr const char* kThunarEnd = "<!-- odyssey-end -->\n";
constexpr const char* kDefaultsSection = "[Default Applications]";


std::string ReplaceAll(std::string text, const std::string& key, const std::string& value) {
  for (size_t p = text.find(key); p != std::string::npos; p = text.find(key, p + value.size()))
    text.replace(p, key.size(), value);
  return text;
}

// The Nautilus script template with one action's title and odyssey-open option.
std::string NautilusScript(const std::string& tmpl, const std::string& title,
                           const std::string& action) {
  return ReplaceAll(ReplaceAll(tmpl, "@TITLE@", title), "@ACTION@", action);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status MkdirParents(const std::string& dir) {
  for (size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return Error::Errno("mkdir", part);
    if (pos == std::string::npos) return OkStatus();
  }
}

Status WriteWithParents(const std::string& path, const std::string& content, int mode) {
  ODYSSEY_TRY(MkdirParents(path.substr(0, path.rfind('/'))));
  ODYSSEY_TRY(WriteFileAtomic(path, content, mode));
  if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) return Error::Errno("chmod", path);
  return OkStatus();
}

// Removes path only if it is one of ours (carries the marker).
void RemoveOurs(const std::string& path, Report* report) {
  auto text = ReadFileToString(path, 1 << 20);
  if (!text.ok()) return;
  if (text->find(kMarker) == std::string::npos) {
    report->push_back("left alone (not written by odyssey): " + path);
    return;
  }
  if (::unlink(path.c_str()) == 0) report->push_back("removed " + path);
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// Finds "KEY=" inside [Default Applications]; returns the line index or -1. *section_end
// is where a new key would go (-1 when there is no such section).
int FindDefault(const std::vector<std::string>& lines, const std::string& key, int* section_end) {
  int found = -1;
  *section_end = -1;
  bool in_section = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (!l.empty() && l[0] == '[') {
      in_section = l == kDefaultsSection;
      if (in_section) *section_end = static_cast<int>(i) + 1;
      continue;
    }
    if (!in_section) continue;
    if (!l.empty()) *section_end = static_cast<int>(i) + 1;
    if (l.rfind(key + "=", 0) == 0) found = static_cast<int>(i);
  }
  return found;
}

std::string MimeappsPath(const IntegrateOptions& o) { return o.config_home + "/mimeapps.list"; }
std::string StatePath(const IntegrateOptions& o) { return o.data_home + "/odyssey/integrate.state"; }

// Thunar's uca.xml with our block added (or replaced) before </actions>.
Result<std::string> ThunarWithBlock(const std::string& existing, const std::string& block) {
  std::string text = existing.empty() ? "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<actions>\n</actions>\n"
                                      : existing;
  size_t begin = text.find(kThunarBegin);
  if (begin != std::string::npos) {
    size_t end = text.find(kThunarEnd, begin);
    if (end == std::string::npos) return Error{"uca.xml: odyssey block without its end marker", EINVAL};
    text.erase(begin, end + std::string(kThunarEnd).size() - begin);
  }
  size_t close = text.rfind("</actions>");
  if (close == std::string::npos) return Error{"uca.xml: no </actions> element", EINVAL};
  text.insert(close, block);
  return text;
}

}  // namespace

IntegrateOptions IntegrateOptions::FromEnvironment() {
  IntegrateOptions o;
  const char* home = std::getenv("HOME");
  std::string h = home && *home ? home : "/tmp";
  const char* data = std::getenv("XDG_DATA_HOME");
  const char* config = std::getenv("XDG_CONFIG_HOME");
  o.data_home = data && *data == '/' ? data : h + "/.local/share";
  o.config_home = config && *config == '/' ? config : h + "/.config";
  return o;
}

std::vector<std::string> DesktopMimeTypes() {
  std::vector<std::string> out;
  for (const auto& line : Lines(EmbeddedDesktopTemplates().desktop)) {
    if (line.rfind("MimeType=", 0) != 0) continue;
    std::istringstream in(line.substr(9));
    std::string m;
    while (std::getline(in, m, ';'))
      if (!m.empty()) out.push_back(m);
  }
  return out;
}

Result<Report> InstallUserIntegration(const IntegrateOptions& o) {
  if (o.open_program.empty() || o.open_program[0] != '/')
    return Error{"odyssey-open must be given as an absolute path, not '" + o.open_program + "'", EINVAL};
  // The path goes unquoted into a shell script, Exec= lines and XML: plain characters only.
  if (o.open_program.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789/._+-") != std::string::npos)
    return Error{"the path of odyssey-open '" + o.open_program + "' has a character that the "
                 "file-manager files cannot carry unquoted (use one of [A-Za-z0-9/._+-])", EINVAL};
  const DesktopTemplates& t = EmbeddedDesktopTemplates();
  Report report;
  struct Item {
    std::string path, content;
    int mode;
  };
  const std::vector<Item> items = {
      {o.data_home + "/applications/" + kDesktopId, t.desktop, 0644},
      {o.data_home + "/nautilus/scripts/Open in Disposable VM",
       NautilusScript(t.nautilus, "Open in Disposable VM", "--dispvm"), 0755},
      {o.data_home + "/nautilus/scripts/Convert to Trusted PDF or PNG",
       NautilusScript(t.nautilus, "Convert to Trusted PDF/PNG", "--convert"), 0755},
      {o.data_home + "/kio/servicemenus/odyssey-open.desktop", t.dolphin, 0755},  // KF6
      {o.data_home + "/kservices5/ServiceMenus/odyssey-open.desktop", t.dolphin, 0644},  // KF5
  };
  for (const auto& item : items) {
    if (FileExists(item.path)) {
      auto old = ReadFileToString(item.path, 1 << 20);
      if (old.ok() && old->find(kMarker) == std::string::npos)
        return Error{item.path + " exists and was not written by odyssey; not replacing it", EEXIST};
    }
    ODYSSEY_TRY(WriteWithParents(item.path, ReplaceAll(item.content, "@ODYSSEY_OPEN@", o.open_program), item.mode));
    report.push_back("installed " + item.path);
  }

  std::string uca = o.config_home + "/Thunar/uca.xml";
  std::string existing;
  if (FileExists(uca)) {
    auto text = ReadFileToString(uca, 4 << 20);
    if (!text.ok()) return text.error();
    existing = text.value();
  }
  auto thunar = ThunarWithBlock(existing, ReplaceAll(t.thunar, "@ODYSSEY_OPEN@", o.open_program));
  if (!thunar.ok()) return thunar.error().Wrap(uca);
  ODYSSEY_TRY(WriteWithParents(uca, thunar.value(), 0644));
  report.push_back("added Thunar custom actions to " + uca);

  if (!o.set_defaults) return report;
  // Defaults, as `xdg-mime default` records them, remembering what was there before.
  std::vector<std::string> lines, state;
  if (auto text = ReadFileToString(MimeappsPath(o), 4 << 20); text.ok()) lines = Lines(text.value());
  if (auto text = ReadFileToString(StatePath(o), 1 << 20); text.ok()) state = Lines(text.value());
  for (const auto& mime : DesktopMimeTypes()) {
    int end;
    int at = FindDefault(lines, mime, &end);
    std::string previous = at >= 0 ? lines[static_cast<size_t>(at)].substr(mime.size() + 1) : "";
    bool recorded = false;
    for (const auto& s : state) recorded |= s.rfind(mime + "\t", 0) == 0;
    if (!recorded && previous.rfind(kDesktopId, 0) != 0) state.push_back(mime + "\t" + previous);
    std::string entry = mime + "=" + kDesktopId + ";";
    if (at >= 0) {
      lines[static_cast<size_t>(at)] = entry;
    } else if (end >= 0) {
      lines.insert(lines.begin() + end, entry);
    } else {
      lines.push_back(kDefaultsSection);
      lines.push_back(entry);
    }
  }
  ODYSSEY_TRY(WriteWithParents(StatePath(o), Join(state), 0644));
  ODYSSEY_TRY(WriteWithParents(MimeappsPath(o), Join(lines), 0644));
  report.push_back("made " + std::string(kDesktopId) + " the default for " +
                   std::to_string(DesktopMimeTypes().size()) + " types in " + MimeappsPath(o));
  return report;
}

Result<Report> RemoveUserIntegration(const IntegrateOptions& o) {
  Report report;
  for (const std::string& p :
       {o.data_home + "/applications/" + kDesktopId, o.data_home + "/nautilus/scripts/Open in Disposable VM",
        o.data_home + "/nautilus/scripts/Convert to Trusted PDF or PNG",
        o.data_home + "/kio/servicemenus/odyssey-open.desktop",
        o.data_home + "/kservices5/ServiceMenus/odyssey-open.desktop"})
    RemoveOurs(p, &report);

  std::string uca = o.config_home + "/Thunar/uca.xml";
  if (auto text = ReadFileToString(uca, 4 << 20); text.ok()) {
    size_t begin = text->find(kThunarBegin);
    size_t end = begin == std::string::npos ? begin : text->find(kThunarEnd, begin);
    if (end != std::string::npos) {
      std::string t = text.value();
      t.erase(begin, end + std::string(kThunarEnd).size() - begin);
      ODYSSEY_TRY(WriteFileAtomic(uca, t, 0644));
      report.push_back("removed the Thunar custom actions from " + uca);
    }
  }

  auto text = ReadFileToString(MimeappsPath(o), 4 << 20);
  if (text.ok()) {
    std::vector<std::string> lines = Lines(text.value()), state;
    if (auto s = ReadFileToString(StatePath(o), 1 << 20); s.ok()) state = Lines(s.value());
    int restored = 0;
    for (const auto& mime : DesktopMimeTypes()) {
      int end;
      int at = FindDefault(lines, mime, &end);
      if (at < 0 || lines[static_cast<size_t>(at)].substr(mime.size() + 1).rfind(kDesktopId, 0) != 0)
        continue;  // the user changed it since: theirs now
      std::string previous;
      for (const auto& s : state)
        if (s.rfind(mime + "\t", 0) == 0) previous = s.substr(mime.size() + 1);
      if (previous.empty()) {
        lines.erase(lines.begin() + at);
      } else {
        lines[static_cast<size_t>(at)] = mime + "=" + previous;
      }
      ++restored;
    }
    ODYSSEY_TRY(WriteFileAtomic(MimeappsPath(o), Join(lines), 0644));
    report.push_back("restored the previous defaults of " + std::to_string(restored) + " types in " +
                     MimeappsPath(o));
  }
  ::unlink(StatePath(o).c_str());
  return report;
}

int RunIntegrateCommand(const IntegrateOptions& options, bool remove, const char* program) {
  auto report = remove ? RemoveUserIntegration(options) : InstallUserIntegration(options);
  if (!report.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, report.error().message.c_str());
    return 1;
  }
  for (const auto& line : report.value()) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace odyssey::handlers
