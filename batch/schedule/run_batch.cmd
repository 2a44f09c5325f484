@echo off
rem One run of the nightly batch job on Windows; scheduled by schtasks_create.cmd.
rem Adjust C:\fashion to the checkout. Exit codes: 0 all filed, 1 some quarantined or left for
rem the next run, 75 retry later (gateway unavailable, or another run holds the lock: the lock
rem works on Windows too), 78 fix the configuration (the message names the setting).
cd /d C:\fashion || exit /b 78
if not defined FASHION_BATCH_GATEWAY set FASHION_BATCH_GATEWAY=http://localhost:8080
.venv\Scripts\python.exe -m batch run >> logs\batch-schtasks.log 2>&1
exit /b %ERRORLEVEL%
