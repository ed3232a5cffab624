# The CUDA backend, built twice from the same sources:
#   recall_kernels_emu + recall_cuda_emu: kernels/*.cu compiled by the host C++
#     compiler against the SIMT emulator (kernels/emu/), always built; the tests
#     run every kernel there.
#   recall_kernels_cuda + recall_cuda: the same .cu files through nvcc, linked
#     with cudart, cuBLAS and NCCL, when RECALL_CUDA finds (AUTO) or requires (ON)
#     the CUDA toolkit.
# src/backend/cuda/*.c is the host side of the backend in both.

set(RECALL_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO (when nvcc is found), ON (required) or OFF")
set_property(CACHE RECALL_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${RECALL_CUDA}" recall_cuda_mode)
if(NOT recall_cuda_mode STREQUAL "AUTO")
  if(RECALL_CUDA)
    set(recall_cuda_mode ON)
  else()
    set(recall_cuda_mode OFF)
  endif()
endif()

file(GLOB RECALL_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/*.cu)
file(GLOB RECALL_EMU_RUNTIME_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/emu/*.cpp)
file(GLOB RECALL_CUDA_BACKEND_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.c)

# recall_emu_wrap(<out_var> <file.cu>...): one generated .cpp per .cu that
# includes it, so the host compiler builds the .cu as C++ while nvcc can still
# own the .cu file itself in the real build.
function(recall_emu_wrap out_var)
  set(wrappers)
  foreach(cu ${ARGN})
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${cu})
    string(REPLACE "/" "_" flat ${rel})
    set(w ${CMAKE_BINARY_DIR}/emu_wrap/${flat}.cpp)
    file(CONFIGURE OUTPUT ${w} CONTENT "#include \"${cu}\"\n")
    list(APPEND wrappers ${w})
  endforeach()
  set(${out_var} ${wrappers} PARENT_SCOPE)
endfunction()

# CUDA code reinterprets freely (vector loads, fp16 pairs) and unrolls with
# pragmas the host compiler does not know.
set(RECALL_EMU_KERNEL_FLAGS -fno-strict-aliasing -Wno-unknown-pragmas)

recall_emu_wrap(RECALL_EMU_KERNEL_WRAPPERS ${RECALL_KERNEL_SOURCES})
add_library(recall_kernels_emu STATIC ${RECALL_EMU_RUNTIME_SOURCES} ${RECALL_EMU_KERNEL_WRAPPERS})
target_include_directories(recall_kernels_emu PUBLIC ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(recall_kernels_emu PUBLIC RC_SIMT_EMU=1)
target_compile_options(recall_kernels_emu PRIVATE ${RECALL_EMU_KERNEL_FLAGS})
target_link_libraries(recall_kernels_emu PUBLIC Threads::Threads m)

if(RECALL_CUDA_BACKEND_SOURCES)
  add_library(recall_cuda_emu STATIC ${RECALL_CUDA_BACKEND_SOURCES})
  target_link_libraries(recall_cuda_emu PUBLIC recall_kernels_emu recall_core)
else()
  add_library(recall_cuda_emu INTERFACE)
  target_link_libraries(recall_cuda_emu INTERFACE recall_kernels_emu recall_core)
endif()

set(RECALL_HAVE_CUDA OFF)
if(NOT recall_cuda_mode STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    # NCCL (the multi-GPU data path) ships next to the toolkit's libraries here,
    # but is not part of find_package(CUDAToolkit).
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublas AND NCCL_LIBRARY AND NCCL_INCLUDE_DIR)
    set(RECALL_HAVE_CUDA ON)
  elseif(recall_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "RECALL_CUDA is ON but no CUDA toolkit (nvcc, cuBLAS, NCCL) was found")
  else()
    message(STATUS "CUDA toolkit not found: building without the CUDA backend (the emulated one is still built)")
  endif()
endif()

if(RECALL_HAVE_CUDA)
  message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, NCCL ${NCCL_LIBRARY}")
  if(RECALL_KERNEL_SOURCES)
    add_library(recall_kernels_cuda STATIC ${RECALL_KERNEL_SOURCES})
  else()
    add_library(recall_kernels_cuda INTERFACE)
  endif()
  get_target_property(recall_kernels_cuda_type recall_kernels_cuda TYPE)
  if(recall_kernels_cuda_type STREQUAL "INTERFACE_LIBRARY")
    set(scope INTERFACE)
  else()
    set(scope PUBLIC)
    set_target_properties(recall_kernels_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static)
    target_compile_options(recall_kernels_cuda PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>)
  endif()
  target_include_directories(recall_kernels_cuda ${scope} ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(recall_kernels_cuda ${scope} CUDA::cudart_static CUDA::cublas)
  if(RECALL_CUDA_BACKEND_SOURCES)
    add_library(recall_cuda STATIC ${RECALL_CUDA_BACKEND_SOURCES})
    target_include_directories(recall_cuda PRIVATE ${NCCL_INCLUDE_DIR})
    target_link_libraries(recall_cuda PUBLIC recall_kernels_cuda recall_core ${NCCL_LIBRARY})
    target_compile_definitions(recall_cuda PUBLIC RECALL_HAVE_CUDA=1)
  else()
    add_library(recall_cuda INTERFACE)
    target_link_libraries(recall_cuda INTERFACE recall_kernels_cuda recall_core)
  endif()
endif()
