// Uses qwen::tokenizer (which brings utf8proc): NFC and the byte-level alphabet. Exits 0 only when
// every answer is right.
#include <cstdio>
#include <string>

#include <qwen/tokenizer/tokenizer.hpp>

int main() {
  std::string nfc;
  qwen::tokenizer::unicode::append_nfc(nfc, "e\xCC\x81");  // e + COMBINING ACUTE ACCENT
  const bool ok = nfc == "\xC3\xA9" && qwen::tokenizer::byte_level::char_of_byte(' ') == 0x120;
  std::printf("consumer tokenizer: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
