/*-------------------------------------------------------------------------
 *
 * retry.c
 *		Jobs that are pending again after a run: retries with their
 *		back-off, and runs interrupted because their worker was asked to
 *		stop.
 *
 * finish.c records every outcome; the two kinds that leave a job in
 * jobq.job, due again later, are written here, each in one UPDATE for
 * the lot, as the tables' owner.  Each job written is due again at its
 * new run_at, for the claim floors and the wake-ups as if it were
 * enqueued again.
 *
 * IDENTIFICATION
 *		src/retry.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "wakeup.h"

static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr retry_lease_plan = NULL;
static SPIPlanPtr interrupt_plan = NULL;

/*
 * Jobs to retry: their attempt counted, their error, their next run_at
 * (null: as it is) and the start of the attempt (null: as it is).  From
 * 0.5.0 on, a job of an external task that is retried (by its executor's
 * jobq.fail(), or because its lease expired) loses its lease too.
 */
#define RETRY_SQL(lease) \
"UPDATE jobq.job j" \
"   SET attempts = o.attempt," \
"       run_at = COALESCE(o.next_run_at, j.run_at)," \
"       started_at = COALESCE(o.started_at, j.started_at)," \
"       last_error = o.error, last_sqlstate = o.sqlstate" lease \
"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[])," \
"                  pg_catalog.unnest($2::pg_catalog.text[])," \
"                  pg_catalog.unnest($3::pg_catalog.text[])," \
"                  pg_catalog.unnest($4::pg_catalog.timestamptz[])," \
"                  pg_catalog.unnest($5::pg_catalog.timestamptz[])," \
"                  pg_catalog.unnest($6::pg_catalog.int4[]))" \
"       AS o(id, error, sqlstate, started_at, next_run_at, attempt)" \
" WHERE j.id OPERATOR(pg_catalog.=) o.id"
static const char *retry_sql = RETRY_SQL("");
static const char *retry_lease_sql =
RETRY_SQL(", lease_token = NULL, lease_expires_at = NULL");

/*
 * Jobs whose run was interrupted because their worker was asked to stop
 * (pg_terminate_backend(), a fast shutdown, DROP DATABASE ... FORCE): the
 * policy.
 *
 * An interruption is not the job's fault, so it does not count as an
 * attempt: a restart of the server must not use up a job's attempts.  But
 * it is not free either.  Such a job used to stay as it was, at the head
 * of the queue (its run_at is the oldest), and the next worker started it
 * first.  Under a terminate storm a job slower than a worker's life then
 * never finished, and a few of them held every worker: each replacement
 * worker claimed one of them, with a claim of one job (new workers, and
 * workers after a slow job, claim one), and was terminated in it.  Every
 * job behind them waited: no completions at all for as long as the storm
 * lasted.
 *
 * So an interrupted job goes to the back of the line, like a retry, with
 * a delay that grows as long as its runs keep being interrupted: twice the
 * time from the start of the first of its consecutive interrupted runs to
 * the start of the run just interrupted, at least jobq.retry_delay and at
 * most JOBQ_MAX_RETRY_DELAY_MS, with the retries' +/-25 % jitter.  A job
 * interrupted over and over is then tried again at times that grow
 * geometrically (about three times its age in the streak each time), so
 * however many such jobs there are, each costs a handful of runs an hour,
 * and the jobs behind it are claimed first.  A single interruption (a
 * restart) delays a job by jobq.retry_delay only, however long it ran.
 *
 * No schema change is needed to know the streak: the interrupted job's
 * last_sqlstate becomes 57P01 (admin_shutdown, what any backend gets from
 * pg_terminate_backend()), last_error says what happened, and started_at
 * keeps the start of the first interrupted run of the streak.  The next
 * run that ends otherwise (a retry writes its own last_error, a success
 * moves the job to the history) ends the streak.  No limit on
 * interruptions is needed either: the growing delay already bounds what a
 * job that can never finish costs, and only a superuser's job could
 * terminate its own worker (the workers run as the bootstrap superuser).
 * A job that kills its worker, or ignores the cancel until the watchdog
 * ends it, is another matter: that attempt is counted, with the retries'
 * back-off (JobqCountCrashedAttempts).
 *
 * This UPDATE runs only for interrupted jobs, never on the drain's path.
 * $2 is the time of the interruption (the chunk's transaction may be
 * older than that), $3 the message, $4 the interrupted runs' starts, $5
 * and $6 the shortest and longest delays in seconds.  (A job whose own
 * error had SQLSTATE 57P01 starts its streak a little early: harmless.)
 */
#define INTERRUPTED_SQLSTATE "57P01"
#define INTERRUPT_SINCE \
"(CASE WHEN j.last_sqlstate = '" INTERRUPTED_SQLSTATE "' AND j.started_at IS NOT NULL" \
"      THEN LEAST(j.started_at, o.started_at) ELSE o.started_at END)"
static const char *interrupt_sql =
"UPDATE jobq.job j"
"   SET started_at = " INTERRUPT_SINCE ","
"       run_at = $2 + pg_catalog.make_interval(secs =>"
"                LEAST($6, GREATEST($5, 2 * EXTRACT(epoch FROM o.started_at - " INTERRUPT_SINCE ")::pg_catalog.float8))"
"                * (0.75 + 0.5 * pg_catalog.random())),"
"       last_error = $3, last_sqlstate = '" INTERRUPTED_SQLSTATE "'"
"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
"                  pg_catalog.unnest($4::pg_catalog.timestamptz[]))"
"       AS o(id, started_at)"
" WHERE j.id OPERATOR(pg_catalog.=) o.id"
" RETURNING j.id, j.priority, j.run_at";

static const char *interrupted_error =
"the job was interrupted: its worker was asked to stop";

/*
 * Delay before the next attempt: jobq.retry_delay doubled per attempt
 * made, capped, with +/-25% jitter so that failures do not retry in step.
 */
TimestampTz
JobqNextAttemptTime(int attempts)
{
	double		delay = (double) jobq_retry_delay;
	int			i;

	for (i = 1; i < attempts && delay < JOBQ_MAX_RETRY_DELAY_MS; i++)
		delay *= 2;
	delay = Min(delay, (double) JOBQ_MAX_RETRY_DELAY_MS);
	delay *= 0.75 + 0.5 * pg_prng_double(&pg_global_prng_state);
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) delay);
}

/*
 * Write the retries among n: one UPDATE, as the tables' owner.  Each is
 * due again at its next run_at, for the claim floors and the wake-ups as
 * if it were enqueued again.
 */
void
JobqWriteRetries(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *errors = palloc(sizeof(Datum) * n);
	Datum	   *sqlstates = palloc(sizeof(Datum) * n);
	Datum	   *started = palloc(sizeof(Datum) * n);
	Datum	   *next_run = palloc(sizeof(Datum) * n);
	Datum	   *attempts = palloc(sizeof(Datum) * n);
	bool	   *nonulls = palloc0(sizeof(bool) * n);
	bool	   *started_nulls = palloc(sizeof(bool) * n);
	bool	   *sqlstate_nulls = palloc(sizeof(bool) * n);
	bool	   *next_run_nulls = palloc(sizeof(bool) * n);
	Oid			argtypes[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID};
	Datum		values[6];
	int			rc;
	int			i;
	int			k = 0;

	for (i = 0; i < n; i++)
	{
		JobqOutcome *o = &outcomes[i];

		if (o->kind != JOBQ_RETRY)
			continue;
		Assert(o->error != NULL && jobs[i].attempts >= 0);
		ids[k] = Int64GetDatum(jobs[i].id);
		errors[k] = CStringGetTextDatum(o->error);
		sqlstates[k] = CStringGetTextDatum(o->sqlstate);
		sqlstate_nulls[k] = (o->sqlstate[0] == '\0');
		started[k] = TimestampTzGetDatum(o->started_at);
		started_nulls[k] = (o->started_at == 0);
		next_run[k] = TimestampTzGetDatum(o->next_run_at);
		next_run_nulls[k] = (o->next_run_at == 0);
		attempts[k] = Int32GetDatum(jobs[i].attempts);
		k++;
		JobqNoteEnqueue(o->next_run_at != 0 ? o->next_run_at : jobs[i].run_at,
						jobs[i].priority, jobs[i].id, jobs[i].external);
	}
	if (k == 0)
		return;

	values[0] = JobqDatumArray(ids, nonulls, k, INT8OID);
	values[1] = JobqDatumArray(errors, nonulls, k, TEXTOID);
	values[2] = JobqDatumArray(sqlstates, sqlstate_nulls, k, TEXTOID);
	values[3] = JobqDatumArray(started, started_nulls, k, TIMESTAMPTZOID);
	values[4] = JobqDatumArray(next_run, next_run_nulls, k, TIMESTAMPTZOID);
	values[5] = JobqDatumArray(attempts, nonulls, k, INT4OID);

	SPI_connect();
	rc = JobqExecuteKeptAsOwner(JobqSchemaGet()->executors ?
								JobqKeepPlan(&retry_lease_plan, retry_lease_sql, 6, argtypes) :
								JobqKeepPlan(&retry_plan, retry_sql, 6, argtypes),
								values);
	if (rc != SPI_OK_UPDATE || SPI_processed != k)
		elog(ERROR, "jobq could not record job retries: %s",
			 SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * Put back the interrupted jobs among n, after a growing delay: one UPDATE,
 * as the tables' owner (see interrupt_sql for the policy).  Each is due
 * again at its new run_at, for the claim floors and the wake-ups as if it
 * were enqueued again.
 */
void
JobqWriteInterruptions(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	Datum	   *ids = NULL;
	Datum	   *started = NULL;
	bool	   *nonulls;
	Oid			argtypes[6] = {INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID,
	TIMESTAMPTZARRAYOID, FLOAT8OID, FLOAT8OID};
	Datum		values[6];
	int			rc;
	int			i;
	int			k = 0;
	uint64		r;

	for (i = 0; i < n; i++)
	{
		if (outcomes[i].kind != JOBQ_INTERRUPTED)
			continue;
		if (ids == NULL)
		{
			ids = palloc(sizeof(Datum) * n);
			started = palloc(sizeof(Datum) * n);
		}
		ids[k] = Int64GetDatum(jobs[i].id);
		started[k] = TimestampTzGetDatum(outcomes[i].started_at);
		k++;
	}
	if (k == 0)
		return;

	nonulls = palloc0(sizeof(bool) * k);
	values[0] = JobqDatumArray(ids, nonulls, k, INT8OID);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[2] = CStringGetTextDatum(interrupted_error);
	values[3] = JobqDatumArray(started, nonulls, k, TIMESTAMPTZOID);
	values[4] = Float8GetDatum((double) jobq_retry_delay / 1000.0);
	values[5] = Float8GetDatum((double) JOBQ_MAX_RETRY_DELAY_MS / 1000.0);

	SPI_connect();
	rc = JobqExecuteKeptAsOwner(JobqKeepPlan(&interrupt_plan, interrupt_sql, 6,
											 argtypes),
								values);
	if (rc != SPI_OK_UPDATE_RETURNING || SPI_processed != k)
		elog(ERROR, "jobq could not put back interrupted jobs: %s",
			 SPI_result_code_string(rc));
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int16		priority = DatumGetInt16(SPI_getbinval(tup, desc, 2, &isnull));
		TimestampTz run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));

		JobqNoteEnqueue(run_at, priority, id, false);
	}
	SPI_finish();
}
