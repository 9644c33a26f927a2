#include "handlers/convert.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <fcntl.h>
#include <png.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "base/io.h"
#include "base/unique_fd.h"
#include "handlers/service_call.h"

namespace odyssey::handlers {
namespace {

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", dir);
  if (::fsync(fd.get()) != 0) return Error::Errno("fsync", dir);
  return OkStatus();
}

Status MkdirParents(const std::string& dir, mode_t mode) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) return Error::Errno("mkdir", partial);
  }
  return OkStatus();
}

// Removes a temporary output file unless Commit() was called.
class TempOutput {
 public:
  static Result<TempOutput> Create(const std::string& final_path) {
    std::string tmpl = DirName(final_path) + "/." + BaseName(final_path) + ".XXXXXX";
    int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) return Error::Errno("mkostemp", tmpl);
    ::fchmod(fd, 0644);
    return TempOutput(UniqueFd(fd), tmpl);
  }
  TempOutput(TempOutput&& o) noexcept : fd_(std::move(o.fd_)), path_(std::exchange(o.path_, {})) {}
  ~TempOutput() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  int fd() const { return fd_.get(); }
  // fsync, then rename to final_path only if nothing is there, then fsync the directory.
  Status Commit(const std::string& final_path) {
    if (::fsync(fd_.get()) != 0) return Error::Errno("fsync", path_);
    fd_.reset();
    if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) != 0)
      return Error::Errno("rename", final_path);
    path_.clear();
    return FsyncDir(DirName(final_path));
  }

 private:
  TempOutput(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

cairo_status_t CairoWriteToFd(void* closure, const unsigned char* data, unsigned int length) {
  int fd = *static_cast<int*>(closure);
  return WriteAll(fd, data, length).ok() ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

// Builds a PDF page by page from validated pixels: each page is one image, nothing else.
class PdfBuilder {
 public:
  PdfBuilder(int fd, uint32_t dpi) : fd_(fd), scale_(72.0 / dpi) {}
  ~PdfBuilder() {
    if (pdf_) cairo_surface_destroy(pdf_);
  }

  Status AddPage(const Page& page) {
    double w_pt = page.width * scale_, h_pt = page.height * scale_;
    if (!pdf_) {
      pdf_ = cairo_pdf_surface_create_for_stream(CairoWriteToFd, &fd_, w_pt, h_pt);
      cairo_pdf_surface_restrict_to_version(pdf_, CAIRO_PDF_VERSION_1_5);
    } else {
      cairo_pdf_surface_set_size(pdf_, w_pt, h_pt);
    }
    cairo_surface_t* img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, static_cast<int>(page.width),
                                                      static_cast<int>(page.height));
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
      cairo_surface_destroy(img);
      return Error{"cairo: cannot allocate a " + std::to_string(page.width) + "x" +
                       std::to_string(page.height) + " image",
                   ENOMEM};
    }
    cairo_surface_flush(img);
    unsigned char* data = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    const uint8_t* src = page.rgb.data();
    for (uint32_t y = 0; y < page.height; ++y) {
      auto* row = reinterpret_cast<uint32_t*>(data + static_cast<size_t>(y) * static_cast<size_t>(stride));
      for (uint32_t x = 0; x < page.width; ++x, src += 3)
        row[x] = (uint32_t{src[0]} << 16) | (uint32_t{src[1]} << 8) | src[2];
    }
    cairo_surface_mark_dirty(img);
    cairo_t* cr = cairo_create(pdf_);
    cairo_scale(cr, scale_, scale_);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_paint(cr);
    cairo_show_page(cr);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_destroy(img);
    if (st != CAIRO_STATUS_SUCCESS) return Error{std::string("cairo: ") + cairo_status_to_string(st), EIO};
    return OkStatus();
  }

  Status Finish() {
    if (!pdf_) return Error{"no page to write", EINVAL};
    cairo_surface_finish(pdf_);
    cairo_status_t st = cairo_surface_status(pdf_);
    if (st != CAIRO_STATUS_SUCCESS) return Error{std::string("cairo: ") + cairo_status_to_string(st), EIO};
    return OkStatus();
  }

 private:
  int fd_;
  double scale_;
  cairo_surface_t* pdf_ = nullptr;
};

std::string Describe(const Page& p) { return std::to_string(p.width) + "x" + std::to_string(p.height); }

}  // namespace

const char* ConverterService(ConvertOptions::Kind kind) {
  return kind == ConvertOptions::Kind::kPdf ? "odyssey.RenderPDF" : "odyssey.RenderImage";
}

std::string TrustedOutputPath(const std::string& path, ConvertOptions::Kind kind) {
  std::string dir = DirName(path), base = BaseName(path);
  size_t dot = base.rfind('.');
  if (dot != std::string::npos && dot > 0) base.erase(dot);
  std::string ext = kind == ConvertOptions::Kind::kPdf ? ".trusted.pdf" : ".trusted.png";
  return (path.find('/') == std::string::npos ? "" : dir + "/") + base + ext;
}

std::string DefaultQuarantineDir() {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && *xdg == '/') return std::string(xdg) + "/odyssey/quarantine";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.local/share/odyssey/quarantine";
}

Status WritePngPage(int fd, const Page& page) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = page.width;
  img.height = page.height;
  img.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&img, nullptr, &size, 0, page.rgb.data(), 0, nullptr))
    return Error{std::string("libpng: ") + img.message, EIO};
  std::vector<uint8_t> buf(size);
  if (!png_image_write_to_memory(&img, buf.data(), &size, 0, page.rgb.data(), 0, nullptr))
    return Error{std::string("libpng: ") + img.message, EIO};
  return WriteAll(fd, buf.data(), size);
}

Result<std::string> MoveToQuarantine(const std::string& path, const std::string& dir) {
  ODYSSEY_TRY(MkdirParents(dir, 0700));
  std::string base = BaseName(path);
  for (int i = 0; i < 10000; ++i) {
    std::string dest = dir + "/" + base;
    if (i) dest += '.' + std::to_string(i);  // see open_in_vm.cc FreeName (GCC 12 -Wrestrict)
    if (::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) == 0) {
      ODYSSEY_TRY(FsyncDir(dir));
      return dest;
    }
    if (errno == EEXIST) continue;
    if (errno != EXDEV) return Error::Errno("rename", path + " -> " + dest);
    // Another filesystem: copy, fsync, and only then remove the original.
    UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) return Error::Errno("open", path);
    UniqueFd out(::open(dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out && errno == EEXIST) continue;
    if (!out) return Error::Errno("open", dest);
    Status st = CopyFd(in.get(), out.get());
    if (st.ok() && ::fsync(out.get()) != 0) st = Error::Errno("fsync", dest);
    if (!st.ok()) {
      ::unlink(dest.c_str());
      return st.error();
    }
    ODYSSEY_TRY(FsyncDir(dir));
    if (::unlink(path.c_str()) != 0) return Error::Errno("unlink", path);
    return dest;
  }
  return Error{"quarantine " + dir + ": too many files named " + base, EEXIST};
}

Result<ConvertResult> ConvertFile(DisposableRunner& runner, const std::string& path,
                                  const ConvertOptions& options) {
  const bool is_pdf = options.kind == ConvertOptions::Kind::kPdf;
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!in) return Error::Errno("open", path);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return Error::Errno("fstat", path);
  if (!S_ISREG(st.st_mode)) return Error{path + ": not a regular file", EINVAL};
  ConvertResult result;
  result.output_path = TrustedOutputPath(path, options.kind);
  if (::access(result.output_path.c_str(), F_OK) == 0)
    return Error{result.output_path + " already exists; move it away first", EEXIST};
  auto tmp = TempOutput::Create(result.output_path);
  if (!tmp.ok()) return tmp.error();

  PixelLimits limits = options.limits;
  if (!is_pdf) limits.max_pages = 1;  // an image is one page
  PixelStreamParser parser(limits);
  PdfBuilder pdf(tmp->fd(), options.dpi ? options.dpi : 100);
  Page image;
  PageSink sink = [&](const Page& page, uint32_t index, uint32_t total) -> Status {
    if (is_pdf) {
      Status s = pdf.AddPage(page);
      if (!s.ok()) return s.error().Wrap("page " + std::to_string(index) + " (" + Describe(page) + ")");
    } else {
      image = page;
    }
    result.pixel_bytes += page.rgb.size();
    if (options.on_page) options.on_page(index, total, page);
    return OkStatus();
  };

  bool rejected = false;  // the stream broke a rule (as opposed to ending early)
  CallIo io;
  io.write_stdin = [&](int fd) { return CopyFd(in.get(), fd); };
  io.read_stdout = [&](int fd) -> Status {
    std::vector<uint8_t> buf(1 << 16);
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::Errno("read", "converter output");
      if (n == 0) return parser.Finish();
      Status fed = parser.Feed(buf.data(), static_cast<size_t>(n), sink);
      if (!fed.ok()) {
        rejected = true;
        return fed;
      }
    }
  };
  const char* service = ConverterService(options.kind);
  auto outcome = CallService(runner, options.target, service, std::to_string(options.dpi), std::move(io));
  if (!outcome.ok()) return outcome.error();
  std::string ctx = "converting " + path + " in a " + options.target.Describe();
  std::string exit_note = " (" + std::string(service) + " exit code " + std::to_string(outcome->exit_code) + ")";
  // A stream that broke a rule is the headline even though the renderer then died of the
  // hang-up; a renderer that failed on its own is the headline over the short stream.
  if (rejected)
    return outcome->stdout_status.error().Wrap(ctx + ": rejected the renderer's output" +
                                               (outcome->exit_code != 0 ? exit_note : ""));
  if (outcome->exit_code != 0)
    return Error{ctx + ": " + service + " failed with exit code " + std::to_string(outcome->exit_code) +
                     (outcome->exit_code == 127 ? " (service not found)" : "") +
                     (outcome->stdout_status.ok() ? "" : "; " + outcome->stdout_status.error().message),
                 EPROTO};
  if (!outcome->stdout_status.ok())
    return outcome->stdout_status.error().Wrap(ctx + ": rejected the renderer's output");
  if (!outcome->stdin_status.ok()) return outcome->stdin_status.error().Wrap(ctx);
  result.pages = parser.pages_done();
  ODYSSEY_TRY(is_pdf ? pdf.Finish() : WritePngPage(tmp->fd(), image));
  Status committed = tmp->Commit(result.output_path);
  if (!committed.ok()) return committed.error().Wrap(ctx);
  if (!options.keep_original) {
    auto q = MoveToQuarantine(path, options.quarantine_dir.empty() ? DefaultQuarantineDir()
                                                                  : options.quarantine_dir);
    if (!q.ok())
      return q.error().Wrap("wrote " + result.output_path + " but could not quarantine " + path);
    result.quarantined_path = q.value();
  }
  return result;
}

}  // namespace odyssey::handlers
