// Test helper: a fresh directory under $TMPDIR (or /tmp), removed with its contents.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace odyssey::qrexec::policy::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/odyssey-policy-XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    if (!made) std::abort();
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

  // Writes rel (creating parent directories) atomically: temp file + rename, so a
  // rewrite always gets a new inode and is noticed however coarse the clock is.
  std::string Write(const std::string& rel, const std::string& content, int mode = 0644) const {
    std::string full = path_ + "/" + rel;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    std::string tmp = full + ".tmp-write";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << content;
    }
    ::chmod(tmp.c_str(), mode);
    std::filesystem::rename(tmp, full);
    return full;
  }
  std::string Mkdir(const std::string& rel) const {
    std::string full = path_ + "/" + rel;
    std::filesystem::create_directories(full);
    return full;
  }

 private:
  std::string path_;
};

}  // namespace odyssey::qrexec::policy::testing
