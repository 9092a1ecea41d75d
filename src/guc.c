/*-------------------------------------------------------------------------
 *
 * guc.c
 *		Configuration parameters of jobq, and whether the module was
 *		preloaded, which they and jobq's shared memory need.
 *
 * Out-of-range numbers are rejected by the GUC machinery itself; the check
 * hooks below reject what a range cannot express.  Nothing is clamped.
 *
 * IDENTIFICATION
 *		src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/detoast.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "jobq.h"

char	   *jobq_database = NULL;
int			jobq_workers = 2;
int			jobq_poll_interval = 5000;
int			jobq_batch_size = 128;
int			jobq_default_max_attempts = 5;
int			jobq_default_timeout = 0;
int			jobq_retention = 7 * 24 * 3600;
int			jobq_retry_delay = 1000;
int			jobq_max_payload_size = 1024 * 1024;
int			jobq_max_command_size = 1024 * 1024;
int			jobq_max_result_size = 1024 * 1024;
int			jobq_max_executors = 256;
int			jobq_max_executors_per_role = 32;
int			jobq_cancel_grace = 5000;

/*
 * jobq.database must name a database: not empty, and short enough to be a
 * database name.
 */
static bool
check_jobq_database(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("jobq.database must name a database.");
		return false;
	}
	if (strlen(*newval) >= NAMEDATALEN)
	{
		GUC_check_errdetail("Database names are at most %d bytes long.",
							NAMEDATALEN - 1);
		return false;
	}
	return true;
}

void
JobqDefineGucs(void)
{
	DefineCustomStringVariable("jobq.database",
							   "Database in which jobq workers run jobs.",
							   NULL,
							   &jobq_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   check_jobq_database, NULL, NULL);

	DefineCustomIntVariable("jobq.workers",
							"Number of jobq worker processes.",
							"0 stops job execution.",
							&jobq_workers,
							2, 0, JOBQ_MAX_WORKERS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.poll_interval",
							"Longest time an idle worker sleeps before it looks for due jobs.",
							"A safety net: committed enqueues wake workers at once.",
							&jobq_poll_interval,
							5000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.batch_size",
							"Largest number of jobs a worker claims in one transaction.",
							NULL,
							&jobq_batch_size,
							128, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.default_max_attempts",
							"Attempts a job gets when enqueue does not say.",
							NULL,
							&jobq_default_max_attempts,
							5, 1, JOBQ_MAX_ATTEMPTS,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.default_timeout",
							"Time limit of a job when enqueue does not say.",
							"0 means no limit.",
							&jobq_default_timeout,
							0, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.retention",
							"How long finished jobs stay visible.",
							"0 deletes a job as soon as it finishes.",
							&jobq_retention,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.retry_delay",
							"Delay before the first retry of a failed job; it doubles with each attempt.",
							NULL,
							&jobq_retry_delay,
							1000, 0, JOBQ_MAX_RETRY_DELAY_MS,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_payload_size",
							"Largest payload a task's job may be enqueued with.",
							"Measured as the jsonb value's size in bytes.",
							&jobq_max_payload_size,
							1024 * 1024, 1024, JOBQ_MAX_SIZE_LIMIT,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_command_size",
							"Largest SQL command a job may be enqueued with.",
							"Measured in bytes of the command's text.",
							&jobq_max_command_size,
							1024 * 1024, 1024, JOBQ_MAX_SIZE_LIMIT,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_result_size",
							"Largest result a job may record.",
							"Measured as the jsonb value's size in bytes; a larger result fails the attempt, or the executor's jobq.complete().",
							&jobq_max_result_size,
							1024 * 1024, 1024, JOBQ_MAX_SIZE_LIMIT,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_executors",
							"Most external executors that jobq.executors keeps track of.",
							"An executor that finds the table full of live entries still claims; it is only not shown.",
							&jobq_max_executors,
							256, 16, 65536,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_executors_per_role",
							"Most entries one role may hold in jobq.executors.",
							"A role past it replaces the entry it has used least recently.",
							&jobq_max_executors_per_role,
							32, 1, 65536,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.cancel_grace",
							"How long a job may go on after its timeout, a cancel or a shutdown before its worker ends it by exiting.",
							"A job that catches the cancel (query_canceled) is ended this long after it, and its attempt is counted.",
							&jobq_cancel_grace,
							5000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("jobq");
}

/*
 * A value of a size setting (a varlena: a command, a payload, a result,
 * an error) must be at most limit bytes, set by guc; raised as 54000.
 */
void
JobqCheckSize(Datum value, const char *what, int limit, const char *guc)
{
	Size		size = toast_raw_datum_size(value) - VARHDRSZ;

	if (size > (Size) limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s of %zu bytes is too large", what, size),
				 errdetail("The limit is %d bytes, set by \"%s\".", limit, guc)));
}

/*
 * s cut to at most limit bytes, on a character boundary, marked as cut:
 * for text a job produced (its error message) that jobq keeps.
 */
char *
JobqClipText(char *s, int limit)
{
	static const char mark[] = " ... (cut)";
	int			len = strlen(s);
	int			keep;

	if (len <= limit)
		return s;
	keep = pg_mbcliplen(s, len, Max(limit - (int) strlen(mark), 0));
	return psprintf("%.*s%s", keep, s, mark);
}

/* set by _PG_init when jobq is loaded by shared_preload_libraries */
bool		jobq_preloaded = false;

/*
 * Raise the error that explains that jobq must be preloaded.
 */
void
JobqCheckPreloaded(void)
{
	if (!jobq_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq must be loaded via \"shared_preload_libraries\""),
				 errhint("Add jobq to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
}
