--
-- upgrade: the installed version is the control file's, and updating to it
-- is a no-op; the extension can be dropped and created again
--
SELECT extversion = (SELECT default_version FROM pg_available_extensions
                     WHERE name = 'jobq') AS current
  FROM pg_extension WHERE extname = 'jobq';
ALTER EXTENSION jobq UPDATE;
-- every upgrade script found leads to the current version
SELECT source, target FROM pg_extension_update_paths('jobq')
 WHERE path IS NOT NULL ORDER BY 1, 2;

DROP EXTENSION jobq;
CREATE EXTENSION jobq;
SELECT jobq.enqueue('SELECT ''back'' AS again') AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;
