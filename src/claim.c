/*-------------------------------------------------------------------------
 *
 * claim.c
 *		Claiming due jobs.
 *
 * jobq.job holds unfinished jobs only, so the index that serves the claim
 * stays small; a job that ends leaves it (finish.c).
 *
 * A claim is a row lock and nothing else: SELECT ... FOR UPDATE SKIP
 * LOCKED in the execution transaction, which then runs the jobs and
 * records their outcomes before it commits.  A claim writes no new row
 * version and no index entry, and a claimed job needs no recovery: if its
 * worker dies, the transaction and its locks are gone and the job is
 * pending as it was.  The attempt a dying worker was in is counted from
 * the journal (journal.c, finish.c).  The row locks are
 * also what makes an outcome safe to write without checks: no other
 * transaction can touch a claimed job until its outcome commits.
 *
 * All statements are prepared once per worker and kept (SPI_keepplan),
 * for the installed version of the tables (schema.c), and prepared again
 * when it changes.
 *
 * IDENTIFICATION
 *		src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/lmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "floors.h"

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_level_plan = NULL;
static SPIPlanPtr claim_blocked_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;

/*
 * What a claim reads of a job.  {TASK} and {PENDING} depend on the
 * installed version: see schema_sql().
 */
#define CLAIM_COLUMNS \
"SELECT id, owner::pg_catalog.oid, command," \
"       COALESCE((EXTRACT(epoch FROM timeout) * 1000)::pg_catalog.int8, 0)," \
"       attempts + 1, max_attempts, priority, run_at, ctid, queue, {TASK}"

static const char *claim_sql =
CLAIM_COLUMNS
"  FROM jobq.job"
" WHERE {PENDING}run_at <= pg_catalog.now()"
" ORDER BY priority DESC, run_at, id"
" LIMIT $1"
"   FOR UPDATE SKIP LOCKED";

/*
 * The claim while some queues are paused or at their concurrency limit:
 * their jobs are skipped, and no floor is used or raised (a skipped job
 * must stay claimable).
 */
static const char *claim_blocked_sql =
CLAIM_COLUMNS
"  FROM jobq.job"
" WHERE {PENDING}run_at <= pg_catalog.now()"
"   AND queue <> ALL ($2) AND owner::pg_catalog.oid <> ALL ($3)"
" ORDER BY priority DESC, run_at, id"
" LIMIT $1"
"   FOR UPDATE SKIP LOCKED";

/*
 * The claim within one priority level, from that level's floor: the index
 * scan starts at the floor instead of walking the entries of finished
 * jobs at the head of the index, which a long transaction elsewhere can
 * keep from being cleaned up for minutes.
 */
static const char *claim_level_sql =
CLAIM_COLUMNS
"  FROM jobq.job"
" WHERE {PENDING}priority = $1"
"   AND (run_at, id) >= ($2, $3) AND run_at <= pg_catalog.now()"
" ORDER BY priority DESC, run_at, id"
" LIMIT $4"
"   FOR UPDATE SKIP LOCKED";

/*
 * When an idle worker must look again: the earliest future run_at.  Due
 * jobs are not counted: with nothing claimable, any due job is locked by
 * a worker that runs it (or lets it go and wakes the pool).
 */
static const char *next_due_sql =
"SELECT pg_catalog.min(run_at) FROM jobq.job"
" WHERE {PENDING}run_at > pg_catalog.now()";


/*
 * A statement of this file for the installed schema: {TASK} becomes the
 * columns of tasks (null before 0.3.0), {PENDING} the condition of the
 * claim index's predicate (state = 'pending' before 0.5.0; from 0.5.0 on,
 * not a job of an external task, which only jobq.claim() takes).
 */
static char *
schema_sql(const char *tmpl)
{
	const JobqSchema *schema = JobqSchemaGet();
	StringInfoData buf;
	const char *p = tmpl;

	initStringInfo(&buf);
	while (*p)
	{
		if (strncmp(p, "{TASK}", 6) == 0)
		{
			appendStringInfoString(&buf, schema->tasks ? "task, payload" :
								   "NULL::pg_catalog.text, NULL::pg_catalog.jsonb");
			p += 6;
		}
		else if (strncmp(p, "{PENDING}", 9) == 0)
		{
			appendStringInfoString(&buf, schema->job_state ?
								   "state = 'pending' AND " :
								   schema->executors ? "NOT external AND " : "");
			p += 9;
		}
		else
			appendStringInfoChar(&buf, *p++);
	}
	return buf.data;
}

/*
 * The kept statement *plan, prepared for the installed schema.  All of
 * them are prepared again when the schema changes (ALTER EXTENSION jobq
 * UPDATE, or DROP and CREATE EXTENSION).
 */
static SPIPlanPtr
claim_plan_for(SPIPlanPtr *plan, const char *tmpl, int nargs, Oid *argtypes)
{
	static JobqPlanSet claim_plans;

	if (*plan != NULL && claim_plans.generation == JobqSchemaGet()->generation)
		return *plan;
	return JobqKeepPlanIn(&claim_plans, plan, schema_sql(tmpl), nargs, argtypes);
}

/* append the claimed rows of the last statement to jobs[*njobs..] */
static void
collect_jobs(JobqJob *jobs, int *njobs, MemoryContext cxt)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		JobqJob    *job = &jobs[(*njobs)++];
		bool		isnull;
		Datum		d;

		job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		job->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		job->timeout_ms = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		job->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		job->priority = DatumGetInt16(SPI_getbinval(tup, desc, 7, &isnull));
		job->run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
		job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 9, &isnull));
		d = SPI_getbinval(tup, desc, 10, &isnull);
		job->queue = MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		job->command = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 11, &isnull);
		job->task = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 12, &isnull);
		if (isnull)
			job->payload = (Datum) 0;
		else
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			job->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
			MemoryContextSwitchTo(old);
		}
	}
}

/* the jobs one claim takes, as it goes */
typedef struct ClaimBatch
{
	JobqJob    *jobs;
	int			njobs;
	int			limit;			/* most jobs to take */
	MemoryContext cxt;			/* where the jobs are copied */
} ClaimBatch;

/* run a claim statement with values; its rows join the batch */
static void
claim_run(ClaimBatch *b, SPIPlanPtr plan, Datum *values)
{
	int			rc = JobqExecuteKept(plan, values, false);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "jobq claim failed: %s", SPI_result_code_string(rc));
	collect_jobs(b->jobs, &b->njobs, b->cxt);
}

/*
 * Queues that are paused, or running as many jobs as they may, and roles
 * running as many jobs as they may (in workers, or under the leases of
 * external executors): with any, the claim passes over their jobs, in one
 * statement from the start of the index, and returns true.  False with
 * none: nothing claimed yet.
 */
static bool
claim_past_limits(ClaimBatch *b)
{
	JobqLimitTally limits;
	Datum	   *blocked;
	int			nblocked = 0;
	Datum	   *blocked_owners;
	int			nblocked_owners = 0;
	Oid			argtypes[3] = {INT4OID, TEXTARRAYOID, OIDARRAYOID};
	Datum		values[3];
	int			k;

	JobqLimitsRead(&limits);
	/* what is held counts only against a concurrency or max_running limit */
	if (JobqLimitsMayBind(&limits, NULL, NULL))
		JobqLimitsCountHeld(&limits);
	blocked = palloc(sizeof(Datum) * Max(1, limits.nrules));
	for (k = 0; k < limits.nrules; k++)
		if (JobqLimitsQueueBlocked(&limits, k))
			blocked[nblocked++] = CStringGetTextDatum(limits.rules[k].queue);
	blocked_owners = palloc(sizeof(Datum) * Max(1, limits.nroles));
	for (k = 0; k < limits.nroles; k++)
		if (JobqLimitsRoleBlocked(&limits, k))
			blocked_owners[nblocked_owners++] = ObjectIdGetDatum(limits.roles[k].role);
	if (nblocked == 0 && nblocked_owners == 0)
		return false;

	values[0] = Int32GetDatum(b->limit);
	values[1] = PointerGetDatum(construct_array(blocked, nblocked, TEXTOID,
												-1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(blocked_owners, nblocked_owners,
												OIDOID, sizeof(Oid), true,
												TYPALIGN_INT));
	claim_run(b, claim_plan_for(&claim_blocked_plan, claim_blocked_sql, 3, argtypes),
			  values);
	return true;
}

/*
 * Claim level by level, each from its floor, raising the floor to the
 * last job taken.  Without a floor (the floors were reset since they were
 * read), a level is claimed from its start, and raises nothing.
 */
static void
claim_levels(ClaimBatch *b, int slot, const int16 *levels, int nlevels)
{
	Oid			argtypes[4] = {INT2OID, TIMESTAMPTZOID, INT8OID, INT4OID};
	Datum		values[4];
	int			k;

	for (k = 0; k < nlevels && b->njobs < b->limit; k++)
	{
		int			before = b->njobs;
		JobqFloor	floor;
		bool		floored;

		floored = JobqFloorClaimBegin(JOBQ_FLOORS_WORKERS, slot, levels[k], &floor);
		if (!floored)
		{
			floor.priority = levels[k];
			floor.run_at = DT_NOBEGIN;
			floor.id = PG_INT64_MIN;
		}
		values[0] = Int16GetDatum(floor.priority);
		values[1] = TimestampTzGetDatum(floor.run_at);
		values[2] = Int64GetDatum(floor.id);
		values[3] = Int32GetDatum(b->limit - b->njobs);
		claim_run(b, claim_plan_for(&claim_level_plan, claim_level_sql, 4, argtypes),
				  values);
		if (floored)
			JobqFloorClaimEnd(JOBQ_FLOORS_WORKERS, slot, levels[k], b->njobs > before,
							  b->njobs > before ? b->jobs[b->njobs - 1].run_at : 0,
							  b->njobs > before ? b->jobs[b->njobs - 1].id : 0);
	}
}

/* claim from the start of the index, in priority order */
static void
claim_from_start(ClaimBatch *b)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];

	values[0] = Int32GetDatum(b->limit);
	claim_run(b, claim_plan_for(&claim_plan, claim_sql, 1, argtypes), values);
}

/* when a job not due yet is due next; DT_NOEND if none.  Needs SPI. */
static TimestampTz
next_due_time(void)
{
	int			rc;
	bool		isnull;
	Datum		d;

	rc = JobqExecuteKept(claim_plan_for(&next_due_plan, next_due_sql, 0, NULL),
						 NULL, true);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "jobq next-due query failed: %s", SPI_result_code_string(rc));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/*
 * Claim up to limit due jobs for this worker: lock them in the current
 * transaction, which must then run them.  The claimed jobs are copied into
 * cxt, by priority, run_at, id.  With nothing due and next_due not NULL,
 * *next_due is set to the earliest run_at of a pending job (DT_NOEND if
 * none).
 *
 * Claim floors: the claim index is ordered by priority, run_at, id, and a
 * queue is consumed from its head, so the head fills with entries of
 * finished jobs, which the claim would walk every time until vacuum or
 * pruning removes them: with a transaction open elsewhere, for minutes.
 * So shared memory keeps, per priority level, a floor: a key (run_at, id)
 * below which nothing of that level is claimable, and claims scan each
 * level from its floor.  A claim raises its level's floor to the last key
 * it locked: everything before that key was finished, locked by a worker
 * (which lowers the floor again if it lets a job go unrun, and whose
 * death resets the floors), or not visible to the claim's snapshot.  The
 * last case is why every enqueue, when its transaction ends, lowers the
 * floor to its keys and taints the claims of that level in progress: a
 * claim raises the floor no further than the smallest key that appeared
 * while it ran (floors.c, JobqFloorClaimBegin and JobqFloorClaimEnd).  A
 * worker lowers the floor to the claim-time key of every job it claimed
 * and did not finish (retried or left unrun), after its commit: that also
 * undoes a raise by a claim that saw a retried job's new version (a lock
 * on an updated row returns the newest version) and skipped the rows
 * between its old and new key.  Levels are discovered by a skip scan of
 * the index when unknown, and again every JOBQ_FLOOR_RESCAN_POLLS poll
 * intervals, when every floor goes back to the start as a safety net;
 * with more than JOBQ_FLOOR_LEVELS levels, claims scan from the start.
 */
int
JobqClaimInTransaction(int slot, int limit, MemoryContext cxt,
					   JobqJob **jobs_out, TimestampTz *next_due)
{
	ClaimBatch	b;
	int16		levels[JOBQ_FLOOR_LEVELS];
	int			nlevels;

	*jobs_out = NULL;
	if (next_due)
		*next_due = DT_NOEND;
	b.jobs = MemoryContextAllocZero(cxt, sizeof(JobqJob) * limit);
	b.njobs = 0;
	b.limit = limit;
	b.cxt = cxt;

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: claiming jobs");

	JobqFloorsDiscover(JOBQ_FLOORS_WORKERS);
	if (!claim_past_limits(&b))
	{
		if (JobqFloorsGet(JOBQ_FLOORS_WORKERS, levels, NULL, &nlevels))
			claim_levels(&b, slot, levels, nlevels);
		else
			claim_from_start(&b);
	}

	if (b.njobs == 0 && next_due)
		*next_due = next_due_time();

	PopActiveSnapshot();
	SPI_finish();

	*jobs_out = b.jobs;
	return b.njobs;
}
