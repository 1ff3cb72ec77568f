# Every dependency as an imported target. LibTorch must be the PyPI wheel (>= 2.x, cxx11 ABI), never a distro 1.x.

# --- CUDA toolkit (compiles and links without a GPU) ---
if(RANKTUNE_WITH_CUDA)
  find_package(CUDAToolkit)
  if(NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR "ranktune: CUDA toolkit not found. Set CUDAToolkit_ROOT (or put nvcc on PATH), "
                        "or configure with -DRANKTUNE_WITH_CUDA=OFF for a CPU-only build.")
  endif()
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS "${CUDAToolkit_BIN_DIR}/nvcc")
    set(CMAKE_CUDA_COMPILER "${CUDAToolkit_BIN_DIR}/nvcc")
  endif()
  set(CMAKE_CUDA_ARCHITECTURES ${RANKTUNE_CUDA_ARCHITECTURES})
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_EXTENSIONS OFF)
  enable_language(CUDA)
  # Stops LibTorch's CMake from probing for a GPU (there may be none on the build machine).
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST)
    string(REGEX REPLACE "([0-9])([0-9])[^;]*" "\\1.\\2" TORCH_CUDA_ARCH_LIST "${RANKTUNE_CUDA_ARCHITECTURES}")
  endif()
endif()

# --- LibTorch from the torch wheel ---
if(NOT Torch_DIR)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_FOUND)
    execute_process(COMMAND ${Python3_EXECUTABLE} -c "import torch;print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _torch_rc ERROR_QUIET)
    if(_torch_rc EQUAL 0 AND _torch_prefix)
      set(Torch_DIR "${_torch_prefix}/Torch" CACHE PATH "LibTorch CMake package (from the torch wheel)")
    endif()
  endif()
endif()
# LibTorch's CMake overrides CMAKE_CUDA_ARCHITECTURES (it uses TORCH_CUDA_ARCH_LIST): hide ours from it, restore after.
unset(CMAKE_CUDA_ARCHITECTURES)
find_package(Torch CONFIG NO_SYSTEM_ENVIRONMENT_PATH NO_CMAKE_SYSTEM_PATH)
if(RANKTUNE_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES ${RANKTUNE_CUDA_ARCHITECTURES})
endif()
if(NOT Torch_FOUND)
  message(FATAL_ERROR "ranktune: LibTorch not found. Install the wheel (scripts/setup.sh does: pip install torch==2.11.0) "
                      "or pass -DTorch_DIR=<site-packages>/torch/share/cmake/Torch.")
endif()
if(Torch_VERSION VERSION_LESS 2.4)
  message(FATAL_ERROR "ranktune: LibTorch ${Torch_VERSION} at ${Torch_DIR} is too old (a distro libtorch-dev?). "
                      "Point Torch_DIR at the torch wheel's share/cmake/Torch.")
endif()
message(STATUS "ranktune: LibTorch ${Torch_VERSION} from ${Torch_DIR}")
# TORCH_LIBRARIES carries the include dirs, compile options and link libraries of the wheel.
add_library(ranktune_torch INTERFACE)
target_link_libraries(ranktune_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_options(ranktune_torch INTERFACE $<$<COMPILE_LANGUAGE:CXX>:${TORCH_CXX_FLAGS}>)

# --- nlohmann-json (header-only; data, model and io parse JSON with it; never exported) ---
find_package(nlohmann_json 3.10 REQUIRED)

# --- MPI ---
find_package(MPI REQUIRED COMPONENTS C CXX)

# --- HDF5, serial flavour on purpose (libhdf5-openmpi-dev would otherwise switch the default) ---
set(HDF5_PREFER_PARALLEL FALSE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(HDF5_IS_PARALLEL)
  message(FATAL_ERROR "ranktune: found a parallel HDF5 (${HDF5_C_LIBRARIES}); ranktune needs the serial C library. "
                      "Set HDF5_ROOT to a serial install (Debian: /usr/lib/x86_64-linux-gnu/hdf5/serial).")
endif()

# --- Boost.Program_options ---
if(RANKTUNE_BOOST_STATIC)
  set(Boost_USE_STATIC_LIBS ON)
endif()
find_package(Boost 1.71 REQUIRED COMPONENTS program_options)

# --- NCCL ---
if(RANKTUNE_WITH_CUDA)
  find_package(NCCL REQUIRED)
endif()
