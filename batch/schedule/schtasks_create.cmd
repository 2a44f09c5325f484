@echo off
rem Registers the nightly batch job with the Windows Task Scheduler: daily at 02:00, as the
rem current user, replacing an existing task of the same name (/F). Run once from an elevated
rem prompt. Check with:  schtasks /Query /TN FashionNightlyBatch /V /FO LIST
schtasks /Create /TN "FashionNightlyBatch" /TR "C:\fashion\batch\schedule\run_batch.cmd" /SC DAILY /ST 02:00 /F
