#!/usr/bin/env bash
# Regenerate CMake/SCDLCore.cmake from the files on disk (run after adding a file to scdl/ or Resources/).
set -euo pipefail
cd "$(dirname "$0")/.."
{
echo '# The core package `scdl` and the shared Resources/, installed beside the scripted modules'
echo '# (qt-scripted-modules/scdl, qt-scripted-modules/Resources) so that `import scdl` and'
echo '# `PythonSlicer -m scdl` work inside Slicer. Every file is listed explicitly: Testing/core/test_packaging.py'
echo '# compares these lists with the files on disk; CMake/update_core_lists.sh regenerates them.'
echo
echo 'set(SCDL_CORE_PYTHON_SCRIPTS'
find scdl -name '*.py' | sort | sed 's/^/  /'
echo '  )'
echo
echo 'set(SCDL_SHARED_RESOURCES'
find Resources -type f ! -name '.*' | sort | sed 's/^/  /'
echo '  )'
cat <<'EOT'

ctkMacroCompilePythonScript(
  TARGET_NAME SCDLCore
  SCRIPTS "${SCDL_CORE_PYTHON_SCRIPTS}"
  RESOURCES "${SCDL_SHARED_RESOURCES}"
  DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
  INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
  NO_INSTALL_SUBDIR
  )
EOT
} > CMake/SCDLCore.cmake
