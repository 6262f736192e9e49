@echo off
rem LoRA GUI launcher for Windows. Double-click it: the first start creates .venv and installs
rem requirements.txt (a few minutes); later starts are quick. Then your browser opens http://127.0.0.1:7860.
rem Extra arguments go to app.py, e.g.  launch.bat --port 7861
rem NVIDIA GPU: run once from a command prompt as
rem   set TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
rem   launch.bat
setlocal
cd /d "%~dp0"

set "PY="
where py >nul 2>nul && set "PY=py -3"
if not defined PY where python >nul 2>nul && set "PY=python"
if not defined PY (
  echo Python 3.10 or newer is needed. Install it from https://www.python.org/ ^(tick "Add python.exe to PATH"^) and start again.
  goto :error
)
%PY% -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"
if errorlevel 1 (
  echo Python 3.10 or newer is needed.
  goto :error
)

if not exist ".venv\Scripts\python.exe" (
  echo First start: creating the Python environment in .venv ...
  %PY% -m venv .venv
  if errorlevel 1 goto :error
)
set "VPY=.venv\Scripts\python.exe"

"%VPY%" -m lora_gui.stamp check
if errorlevel 1 (
  echo Installing the required packages ^(first start, or requirements.txt changed^). This can take a while ...
  "%VPY%" -m pip install --upgrade pip >nul 2>nul
  if defined TORCH_INDEX_URL (
    "%VPY%" -m pip install torch==2.13.0 --index-url %TORCH_INDEX_URL%
    if errorlevel 1 goto :error
  )
  "%VPY%" -m pip install -r requirements.txt
  if errorlevel 1 goto :error
  "%VPY%" -m lora_gui.stamp write
)

rem launch.bat --setup-only: install and stop.
if "%~1"=="--setup-only" exit /b 0

"%VPY%" app.py --inbrowser %*
if errorlevel 1 goto :error
goto :eof

:error
echo.
echo Something went wrong: see the messages above.
pause
exit /b 1
