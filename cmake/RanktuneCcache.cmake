# ccache in front of the compilers; the sloppiness settings let it cache translation units built with a PCH.
if(RANKTUNE_USE_CCACHE)
  find_program(RANKTUNE_CCACHE ccache)
  if(RANKTUNE_CCACHE)
    set(_launcher ${CMAKE_COMMAND} -E env
        CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime,system_headers
        CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} ${RANKTUNE_CCACHE})
    set(CMAKE_C_COMPILER_LAUNCHER ${_launcher})
    set(CMAKE_CXX_COMPILER_LAUNCHER ${_launcher})
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${_launcher})
    message(STATUS "ranktune: ccache ${RANKTUNE_CCACHE}")
  endif()
endif()
