// Test helper: a small domain catalog covering every kind of domain the policy cares about.
#pragma once

namespace odyssey::qrexec::policy::testing {

inline constexpr const char* kFixtureCatalogJson = R"({
  "domains": {
    "dom0":         {"type": "AdminVM", "uuid": "00000000-0000-0000-0000-000000000000",
                     "default_dispvm": "default-dvm"},
    "work":         {"type": "AppVM", "uuid": "11111111-1111-4111-8111-111111111111",
                     "tags": ["work", "trusted"], "default_dispvm": "default-dvm"},
    "personal":     {"type": "AppVM", "tags": ["personal"], "default_dispvm": "personal-dvm"},
    "untrusted":    {"type": "AppVM"},
    "vault":        {"type": "AppVM", "tags": ["trusted"], "uuid": "22222222-2222-4222-8222-222222222222"},
    "fedora":       {"type": "TemplateVM"},
    "default-dvm":  {"type": "AppVM", "template_for_dispvms": true, "tags": ["disposable-template"]},
    "personal-dvm": {"type": "AppVM", "template_for_dispvms": true,
                     "tags": ["disposable-template", "personal"]},
    "disp1234":     {"type": "DispVM", "dispvm_template": "default-dvm"},
    "disp5678":     {"type": "DispVM", "dispvm_template": "personal-dvm", "default_dispvm": "personal-dvm"}
  }
})";

}  // namespace odyssey::qrexec::policy::testing
