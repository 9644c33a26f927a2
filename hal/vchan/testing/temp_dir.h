// Test helper: a private temporary directory (mkdtemp) removed with its contents on
// destruction, so vchan tests never touch fixed paths.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace odyssey::vchan::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vchan-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace odyssey::vchan::testing
