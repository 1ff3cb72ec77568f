# `cmake --install`: bin/ranktune (the launcher) and bin/ranktune-main, lib/, headers, configs, slurm scripts, the
# module file, and an exported CMake package so other projects can find_package(ranktune).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS ranktune_core ranktune ranktune_main ranktune_torch EXPORT ranktuneTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/ranktune DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/ranktune/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ranktune)
install(DIRECTORY configs slurm DESTINATION ${CMAKE_INSTALL_DATADIR}/ranktune)
install(FILES modules/ranktune/${PROJECT_VERSION} DESTINATION ${CMAKE_INSTALL_DATADIR}/modulefiles/ranktune)
install(EXPORT ranktuneTargets NAMESPACE ranktune:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ranktune)
configure_package_config_file(cmake/ranktuneConfig.cmake.in ${PROJECT_BINARY_DIR}/ranktuneConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ranktune)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ranktuneConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ranktuneConfig.cmake ${PROJECT_BINARY_DIR}/ranktuneConfigVersion.cmake
              cmake/FindNCCL.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ranktune)
