/*-------------------------------------------------------------------------
 *
 * prune.c
 *		Retention: deleting finished jobs older than jobq.retention.
 *
 * One worker at a time takes a turn (JobqPruneTurn), at most every ten
 * seconds, and deletes batches of old history rows.  The state they share
 * (when the next turn is due, where the last one stopped) is this file's
 * own piece of shared memory.
 *
 * IDENTIFICATION
 *		src/prune.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "prune.h"

#define JOBQ_PRUNE_BATCH		1000
#define JOBQ_PRUNE_FLOOR_RESET_MS	(600 * 1000)

typedef struct JobqPruneState
{
	slock_t		mutex;
	TimestampTz next_turn;		/* when pruning is next due */
	TimestampTz floor;			/* pruning starts at this finished_at */
	TimestampTz floor_reset_at; /* when it goes back to the start */
} JobqPruneState;

static JobqPruneState *PruneShared = NULL;
static SPIPlanPtr prune_plan = NULL;

/*
 * Pruning starts at the newest finished_at it deleted last time (the prune
 * floor, in shared memory) for the same reason claims start at their
 * floors: the index on finished_at fills with the entries of deleted
 * rows, which a long transaction elsewhere keeps from being cleaned up.  A
 * row committed after the prune passed its finished_at (a chunk commits
 * after its jobs finished) is caught when the floor goes back to the start,
 * every JOBQ_PRUNE_FLOOR_RESET_MS.
 */
static const char *prune_sql =
"WITH d AS ("
"  DELETE FROM jobq.job_history"
"   WHERE id = ANY (ARRAY("
"           SELECT id FROM jobq.job_history"
"            WHERE finished_at >= $3"
"              AND finished_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
"            ORDER BY finished_at LIMIT $2))"
"  RETURNING finished_at"
")"
"SELECT pg_catalog.count(*)::pg_catalog.int4, pg_catalog.max(finished_at) FROM d";

Size
JobqPruneShmemSize(void)
{
	return MAXALIGN(sizeof(JobqPruneState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqPruneShmemInit(void)
{
	bool		found;

	PruneShared = ShmemInitStruct("jobq prune", JobqPruneShmemSize(), &found);
	if (!found)
	{
		SpinLockInit(&PruneShared->mutex);
		PruneShared->next_turn = 0;
		PruneShared->floor = DT_NOBEGIN;
		PruneShared->floor_reset_at = 0;
	}
}

/*
 * Is it this worker's turn to prune (and to sweep waiting jobs)?  A turn
 * comes every quarter of jobq.retention, between 100 ms and 10 s.
 */
bool
JobqPruneTurn(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		mine = false;
	long		interval_ms;

	interval_ms = Min(10000L, Max(100L, (long) jobq_retention * 250L));

	SpinLockAcquire(&PruneShared->mutex);
	if (PruneShared->next_turn <= now)
	{
		PruneShared->next_turn = TimestampTzPlusMilliseconds(now, interval_ms);
		mine = true;
	}
	SpinLockRelease(&PruneShared->mutex);
	return mine;
}

/* a turn found more to delete: the next one is due at once */
void
JobqPruneAgainSoon(void)
{
	SpinLockAcquire(&PruneShared->mutex);
	PruneShared->next_turn = 0;
	SpinLockRelease(&PruneShared->mutex);
}

/*
 * Delete one batch of finished jobs older than jobq.retention.  Returns
 * JOBQ_PRUNE_BATCH when there may be more to delete.
 */
int
JobqPruneHistory(void)
{
	MemoryContext callercxt = CurrentMemoryContext;
	int			deleted = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (JobqSchemaGet()->installed)
	{
		Oid			argtypes[3] = {FLOAT8OID, INT4OID, TIMESTAMPTZOID};
		Datum		values[3];
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz floor;
		bool		isnull;
		Datum		newest;

		SpinLockAcquire(&PruneShared->mutex);
		if (PruneShared->floor_reset_at <= now)
		{
			PruneShared->floor = DT_NOBEGIN;
			PruneShared->floor_reset_at =
				TimestampTzPlusMilliseconds(now, JOBQ_PRUNE_FLOOR_RESET_MS);
		}
		floor = PruneShared->floor;
		SpinLockRelease(&PruneShared->mutex);

		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "jobq: pruning finished jobs");
		values[0] = Float8GetDatum((double) jobq_retention);
		values[1] = Int32GetDatum(JOBQ_PRUNE_BATCH);
		values[2] = TimestampTzGetDatum(floor);
		if (JobqExecuteKept(JobqKeepPlan(&prune_plan, prune_sql, 3, argtypes),
						 values, false) != SPI_OK_SELECT)
			elog(ERROR, "jobq could not prune finished jobs");
		deleted = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
		newest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
							   &isnull);
		if (!isnull)
		{
			SpinLockAcquire(&PruneShared->mutex);
			if (PruneShared->floor < DatumGetTimestampTz(newest))
				PruneShared->floor = DatumGetTimestampTz(newest);
			SpinLockRelease(&PruneShared->mutex);
		}
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);

	return deleted >= JOBQ_PRUNE_BATCH ? deleted : 0;
}
