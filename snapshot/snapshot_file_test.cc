#include "snapshot/snapshot_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/io.h"
#include "snapshot/catalog.h"

namespace odyssey::snapshot {
namespace {

class SnapshotFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/odyssey-snapfile-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    payload_ = dir_ + "/t.libvirt-qemu.save";
    ASSERT_TRUE(WriteFileAtomic(payload_, std::string(100000, 'x') + "tail").ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  SnapshotInfo Info() {
    SnapshotInfo info;
    info.template_name = "t";
    info.backend = "libvirt-qemu";
    info.fields["domain_name"] = "odyssey-tmpl-t";
    info.fields["accel"] = "tcg";
    return info;
  }
  void FlipPayloadByte(off_t at) {
    std::fstream f(payload_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(at);
    f.put('y');
  }
  void PatchHeader(off_t at, const std::string& bytes) {
    std::fstream f(HeaderPath(payload_), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(at);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  std::string dir_, payload_;
};

TEST_F(SnapshotFileTest, SealThenVerifyRoundTrips) {
  auto sealed = Seal(payload_, Info());
  ASSERT_TRUE(sealed.ok()) << sealed.error().message;
  EXPECT_EQ(sealed->payload_bytes, 100004u);
  EXPECT_EQ(sealed->sha256_hex.size(), 64u);
  auto info = Verify(payload_);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->template_name, "t");
  EXPECT_EQ(info->backend, "libvirt-qemu");
  EXPECT_EQ(info->fields.at("domain_name"), "odyssey-tmpl-t");
  EXPECT_EQ(info->sha256_hex, sealed->sha256_hex);
}

TEST_F(SnapshotFileTest, KnownDigest) {
  ASSERT_TRUE(WriteFileAtomic(payload_, "abc").ok());
  auto sha = Sha256File(payload_);
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(*sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(SnapshotFileTest, FlippedPayloadByteIsCorruption) {
  ASSERT_TRUE(Seal(payload_, Info()).ok());
  FlipPayloadByte(5000);
  auto info = Verify(payload_);
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.error().message.find("is corrupted: sha256"), std::string::npos) << info.error().message;
  EXPECT_NE(info.error().message.find(payload_), std::string::npos);
}

TEST_F(SnapshotFileTest, TruncatedPayloadIsCorruption) {
  ASSERT_TRUE(Seal(payload_, Info()).ok());
  ASSERT_EQ(truncate(payload_.c_str(), 10), 0);
  auto info = Verify(payload_);
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.error().message.find("size 10 bytes"), std::string::npos) << info.error().message;
}

TEST_F(SnapshotFileTest, BadMagicVersionAndCapAreRefused) {
  ASSERT_TRUE(Seal(payload_, Info()).ok());
  PatchHeader(0, "X");
  EXPECT_NE(ReadHeader(payload_).error().message.find("bad magic"), std::string::npos);
  PatchHeader(0, "O");
  PatchHeader(8, std::string("\x07\0\0\0", 4));
  EXPECT_NE(ReadHeader(payload_).error().message.find("version 7 unsupported"), std::string::npos);
  PatchHeader(8, std::string("\x01\0\0\0", 4));
  ASSERT_TRUE(ReadHeader(payload_).ok());
  EXPECT_NE(ReadHeader(payload_, 1000).error().message.find("exceeds the cap"), std::string::npos);
}

TEST_F(SnapshotFileTest, MetadataIsParsedStrictly) {
  SnapshotInfo info = Info();
  info.fields["bad key"] = "v";
  EXPECT_FALSE(Seal(payload_, info).ok());
  info = Info();
  info.fields["k"] = "two\nlines";
  EXPECT_FALSE(Seal(payload_, info).ok());
  ASSERT_TRUE(Seal(payload_, Info()).ok());
  PatchHeader(56, "x");  // "template=" becomes "xemplate=": unknown key
  auto read = ReadHeader(payload_);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.error().message.find("unknown key"), std::string::npos) << read.error().message;
}

TEST_F(SnapshotFileTest, CatalogFindsVerifiesAndRemovesCorrupted) {
  auto catalog = Catalog::Open(dir_ + "/catalog");
  ASSERT_TRUE(catalog.ok());
  auto none = catalog->Find("t", "libvirt-qemu");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  std::string payload = catalog->PayloadPath("t", "libvirt-qemu");
  ASSERT_TRUE(WriteFileAtomic(payload, "memory state").ok());
  ASSERT_TRUE(Seal(payload, Info()).ok());
  auto found = catalog->Find("t", "libvirt-qemu");
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(catalog->List().size(), 1u);

  ASSERT_TRUE(WriteFileAtomic(payload, "memory statf").ok());
  auto corrupted = catalog->Find("t", "libvirt-qemu");
  ASSERT_FALSE(corrupted.ok());
  EXPECT_NE(corrupted.error().message.find("corrupted"), std::string::npos);
  EXPECT_NE(corrupted.error().message.find("rebuild"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(payload));
  EXPECT_FALSE(std::filesystem::exists(HeaderPath(payload)));
  EXPECT_FALSE(catalog->Find("../x", "libvirt-qemu").ok());
}

}  // namespace
}  // namespace odyssey::snapshot
