# Defines the imported target utf8proc::utf8proc (Debian: libutf8proc-dev) when utf8proc is found.
# Used by qwen's own build and by the installed qwenConfig.cmake: only qwen::tokenizer needs it.
if(NOT TARGET utf8proc::utf8proc)
  find_path(QWEN_UTF8PROC_INCLUDE_DIR utf8proc.h)
  find_library(QWEN_UTF8PROC_LIBRARY NAMES utf8proc)
  if(QWEN_UTF8PROC_INCLUDE_DIR AND QWEN_UTF8PROC_LIBRARY)
    add_library(utf8proc::utf8proc UNKNOWN IMPORTED)
    set_target_properties(utf8proc::utf8proc PROPERTIES
      IMPORTED_LOCATION "${QWEN_UTF8PROC_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${QWEN_UTF8PROC_INCLUDE_DIR}")
  endif()
endif()
