// Helpers for the handlers tests: throw-away directories and real sample files made with
// cairo (PDF) and libpng (PNG), so no binary fixtures are checked in.
#pragma once

#include <string>
#include <vector>

namespace odyssey::handlers::testing {

// A mkdtemp directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes a PDF of `pages` pages (width x height points) with some text and shapes.
void WritePdf(const std::string& path, int pages, double width_pt = 300, double height_pt = 200);
// Writes an 8-bit RGB PNG with a gradient.
void WritePng(const std::string& path, int width, int height);
void WriteText(const std::string& path, const std::string& content, int mode = 0644);
std::string ReadText(const std::string& path);
bool Exists(const std::string& path);
std::vector<std::string> ListDir(const std::string& dir);
// Runs a shell command line, returns its exit status and captures stdout (and stderr if
// merge_stderr) into *out.
int RunShell(const std::string& command, std::string* out = nullptr, bool merge_stderr = false);

// Where the build put things (set from CMake through compile definitions).
std::string SourceDir();      // the repository root
std::string ServicesDir();    // handlers/services in the repository: the qrexec services
std::string BinaryDir();      // the build tree root

}  // namespace odyssey::handlers::testing
