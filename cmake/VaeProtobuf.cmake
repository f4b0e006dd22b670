# vae_protobuf_generate(SRCS_VAR HDRS_VAR PROTO_ROOT ROOT OUT_DIR DIR PROTOS proto...) — protoc + the gRPC C++ plugin for
# each .proto (a path under ROOT), writing .pb.{h,cc} and .grpc.pb.{h,cc} under DIR; the generated sources and
# headers are returned in SRCS_VAR / HDRS_VAR. With PYTHON, protoc --python_out and the gRPC Python plugin instead,
# returning the _pb2.py / _pb2_grpc.py files in SRCS_VAR. With MOCK (C++ only), the gRPC plugin also writes the gMock
# stub of each service (_mock.grpc.pb.h, class MockFooStub), appended to HDRS_VAR; it includes <gmock/gmock.h>, so only
# tests include it. The one place this project runs protoc.
function(vae_protobuf_generate srcs_var hdrs_var)
  cmake_parse_arguments(ARG "PYTHON;MOCK" "PROTO_ROOT;OUT_DIR" "PROTOS" ${ARGN})
  set(_srcs)
  set(_hdrs)
  foreach(_proto ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" _stem ${_proto})
    if(ARG_PYTHON)
      set(_out ${ARG_OUT_DIR}/${_stem}_pb2.py ${ARG_OUT_DIR}/${_stem}_pb2_grpc.py)
      set(_flags --python_out=${ARG_OUT_DIR} --grpc_out=${ARG_OUT_DIR} --plugin=protoc-gen-grpc=${GRPC_PYTHON_PLUGIN})
      list(APPEND _srcs ${_out})
    else()
      set(_out ${ARG_OUT_DIR}/${_stem}.pb.cc ${ARG_OUT_DIR}/${_stem}.grpc.pb.cc ${ARG_OUT_DIR}/${_stem}.pb.h
          ${ARG_OUT_DIR}/${_stem}.grpc.pb.h)
      set(_grpc_out ${ARG_OUT_DIR})
      list(APPEND _srcs ${ARG_OUT_DIR}/${_stem}.pb.cc ${ARG_OUT_DIR}/${_stem}.grpc.pb.cc)
      list(APPEND _hdrs ${ARG_OUT_DIR}/${_stem}.pb.h ${ARG_OUT_DIR}/${_stem}.grpc.pb.h)
      if(ARG_MOCK)
        set(_grpc_out generate_mock_code=true:${ARG_OUT_DIR})
        list(APPEND _out ${ARG_OUT_DIR}/${_stem}_mock.grpc.pb.h)
        list(APPEND _hdrs ${ARG_OUT_DIR}/${_stem}_mock.grpc.pb.h)
      endif()
      set(_flags --cpp_out=${ARG_OUT_DIR} --grpc_out=${_grpc_out} --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${_out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${ARG_OUT_DIR}
      COMMAND ${Protobuf_PROTOC_EXECUTABLE} --proto_path=${ARG_PROTO_ROOT} ${_flags} ${ARG_PROTO_ROOT}/${_proto}
      DEPENDS ${ARG_PROTO_ROOT}/${_proto}
      COMMENT "protoc ${_proto}$<$<BOOL:${ARG_PYTHON}>: (python)>")
  endforeach()
  set(${srcs_var} ${_srcs} PARENT_SCOPE)
  set(${hdrs_var} ${_hdrs} PARENT_SCOPE)
endfunction()
