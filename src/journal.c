/*-------------------------------------------------------------------------
 *
 * journal.c
 *		The attempt each worker is in, kept outside the database.
 *
 * A worker claims jobs with row locks held by the transaction that runs
 * them (claim.c): when a worker dies or the server crashes, that
 * transaction is gone, and its jobs are pending again with nothing to
 * undo.  What a row lock cannot remember is the attempt.  A job that kills
 * its worker, or the whole server, would run again and again.
 *
 * So a worker notes each job it starts (id, attempt number, start time) in
 * its own entry of a small file, jobq.journal in the data directory, and
 * clears the entry when the job is done.  The file is mapped into memory
 * (MAP_SHARED), so noting a job is a store into the page cache, not a
 * system call, and it is never flushed to disk: a crashed server leaves
 * the operating system's page cache intact, and only an operating system
 * crash loses an entry (the job then runs again without that attempt
 * counted).  Entries carry the timeline, so a
 * copy of the file taken by a base backup means nothing after promotion.
 *
 * Settlement turns the entries of workers that are gone into counted
 * attempts (finish.c, JobqCountCrashedAttempts).  Every worker settles once
 * before its first claim, and again before its next claim whenever the
 * launcher has seen a worker die; counters in this file's piece of shared
 * memory say when.  A pass takes the entries of slots that are
 * free, of the settling worker itself, and of workers that have not
 * settled yet (those write nothing before they have), one settler at a
 * time (a heavyweight lock).  Workers settle only between execution
 * transactions, holding no row locks, and the settlement skips jobs that
 * are locked (a live worker already runs them again), so it never waits on
 * a job.
 *
 * IDENTIFICATION
 *		src/journal.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/fd.h"
#include "storage/lock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "jobq.h"
#include "floors.h"
#include "journal.h"
#include "slots.h"

#define JOBQ_JOURNAL_FILE		"jobq.journal"

/* the settlement lock: "jobq" in ASCII, and a field4 advisory locks never use */
#define JOBQ_SETTLE_LOCK_KEY	0x6A6F6271
#define JOBQ_SETTLE_LOCK_FIELD4	0x4A51

/* One worker slot's entry; job_id 0 means none. */
typedef struct JobqJournalEntry
{
	int64		job_id;
	TimestampTz started_at;
	int32		attempt;
	int32		pid;
	Oid			dboid;
	TimeLineID	tli;
} JobqJournalEntry;

StaticAssertDecl(sizeof(JobqJournalEntry) == 32,
				 "a journal entry must not straddle a page");

#define JOBQ_JOURNAL_SIZE		(JOBQ_MAX_WORKERS * sizeof(JobqJournalEntry))

/* the file, mapped */
static JobqJournalEntry *journal = NULL;

/*
 * When settlement is due, in shared memory: worker deaths (and server
 * starts) the launcher has seen, how many of them are settled, and which
 * workers have settled since they took their slot.
 */
typedef struct JobqSettleState
{
	slock_t		mutex;
	uint32		deaths;
	uint32		settled_deaths;
	bool		settled[JOBQ_MAX_WORKERS];
} JobqSettleState;

static JobqSettleState *Settle = NULL;

Size
JobqJournalShmemSize(void)
{
	return MAXALIGN(sizeof(JobqSettleState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqJournalShmemInit(void)
{
	bool		found;

	Settle = ShmemInitStruct("jobq journal", JobqJournalShmemSize(), &found);
	if (!found)
	{
		memset(Settle, 0, JobqJournalShmemSize());
		SpinLockInit(&Settle->mutex);
		/* a fresh segment: the journal holds what ran before, if anything */
		Settle->deaths = 1;
		Settle->settled_deaths = 0;
	}
}

/*
 * The launcher saw a worker die: every worker settles the journal before
 * its next claim.
 */
void
JobqJournalNoteDeath(void)
{
	SpinLockAcquire(&Settle->mutex);
	Settle->deaths++;
	SpinLockRelease(&Settle->mutex);
}

/*
 * Must the worker in slot settle the journal before it claims?
 */
bool
JobqJournalSettleNeeded(int slot)
{
	bool		needed;

	SpinLockAcquire(&Settle->mutex);
	needed = !Settle->settled[slot] || Settle->settled_deaths != Settle->deaths;
	SpinLockRelease(&Settle->mutex);
	return needed;
}

/*
 * The worker in slot has not settled (it is new, it is leaving, or an
 * error unlocked its jobs): until it has, its entry is anybody's to settle,
 * and it writes none.
 */
void
JobqJournalUnsettled(int slot)
{
	SpinLockAcquire(&Settle->mutex);
	Settle->settled[slot] = false;
	SpinLockRelease(&Settle->mutex);
}

/*
 * Which slots' entries a settler may take: its own, those of free slots
 * and those of workers that have not settled.  The flags are read before
 * the slots: a worker clears its flag before it gives its slot up, and
 * one that takes a slot writes nothing before it has settled, which needs
 * the settlement lock the caller holds (through the commit of the
 * settlement, until its entries are cleared).
 */
static void
settleable(int slot, bool *take)
{
	bool		settled[JOBQ_MAX_WORKERS];
	bool		free_slot[JOBQ_MAX_WORKERS];
	int			i;

	SpinLockAcquire(&Settle->mutex);
	memcpy(settled, Settle->settled, sizeof(settled));
	SpinLockRelease(&Settle->mutex);
	JobqSlotsFree(free_slot);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		take[i] = (i == slot || free_slot[i] || !settled[i]);
}

/* close a descriptor without losing the errno of the failure at hand */
static void
close_keeping_errno(int fd)
{
	int			save_errno = errno;

	close(fd);
	errno = save_errno;
}

static JobqJournalEntry *
journal_map(void)
{
	int			fd;
	void	   *p;
	struct stat st;

	if (journal != NULL)
		return journal;

	fd = BasicOpenFilePerm(JOBQ_JOURNAL_FILE, O_RDWR | O_CREAT | PG_BINARY,
						   pg_file_create_mode);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", JOBQ_JOURNAL_FILE)));
	/* a new file is extended with zeroes: no entries */
	if (fstat(fd, &st) != 0 ||
		(st.st_size < (off_t) JOBQ_JOURNAL_SIZE &&
		 ftruncate(fd, (off_t) JOBQ_JOURNAL_SIZE) != 0))
	{
		close_keeping_errno(fd);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not size file \"%s\": %m", JOBQ_JOURNAL_FILE)));
	}
	p = mmap(NULL, JOBQ_JOURNAL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	/* the mapping stays valid after the descriptor is closed */
	close_keeping_errno(fd);
	if (p == MAP_FAILED)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not map file \"%s\": %m", JOBQ_JOURNAL_FILE)));
	journal = (JobqJournalEntry *) p;
	return journal;
}

/*
 * Note that this worker starts an attempt at a job.  The id goes in last,
 * so an entry with an id is complete.
 */
void
JobqJournalBegin(int slot, const JobqJob *job, TimestampTz started)
{
	JobqJournalEntry *e = &journal_map()[slot];

	e->job_id = 0;
	pg_write_barrier();
	e->started_at = started;
	e->attempt = job->attempts;
	e->pid = MyProcPid;
	e->dboid = MyDatabaseId;
	e->tli = GetWALInsertionTimeLine();
	pg_write_barrier();
	e->job_id = job->id;
}

/*
 * The attempt is over (whatever its outcome, which the execution
 * transaction records): clear the entry.
 */
void
JobqJournalEnd(int slot)
{
	journal_map()[slot].job_id = 0;
}

/*
 * A settlement pass; see the header comment.  Runs a transaction of its
 * own, so it must be called outside one.
 */
static void settle_locked(int slot, JobqJournalEntry *journal_entries,
						  TimeLineID tli, MemoryContext oldcxt);

void
JobqJournalSettle(int slot)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	JobqJournalEntry *journal_entries;
	TimeLineID	tli = GetWALInsertionTimeLine();
	LOCKTAG		tag;

	journal_entries = journal_map();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();

	/*
	 * One settler at a time.  A heavyweight lock: a settler waiting behind
	 * DDL for its table locks keeps the others waiting interruptibly, and
	 * visibly in pg_locks.  A session lock, held past the commit until the
	 * entries are cleared: a worker that takes a slot meanwhile cannot
	 * write an entry there before it has settled, which needs this lock.
	 * (An advisory lock tag with a field4 of its own, so that it cannot
	 * collide with pg_advisory_lock() keys.)
	 */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, JOBQ_SETTLE_LOCK_KEY, 0,
						 JOBQ_SETTLE_LOCK_FIELD4);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	PG_TRY();
	{
		settle_locked(slot, journal_entries, tli, oldcxt);
	}
	PG_FINALLY();
	{
		LockRelease(&tag, ExclusiveLock, true);
	}
	PG_END_TRY();
}

/*
 * The settlement pass proper, holding the settlement lock; commits the
 * transaction the caller started.
 */
static void
settle_locked(int slot, JobqJournalEntry *journal_entries, TimeLineID tli,
			  MemoryContext oldcxt)
{
	bool		take[JOBQ_MAX_WORKERS];
	bool		clear[JOBQ_MAX_WORKERS];
	bool		done;
	int64		ids[JOBQ_MAX_WORKERS];
	int32		attempts[JOBQ_MAX_WORKERS];
	TimestampTz started[JOBQ_MAX_WORKERS];
	int32		pids[JOBQ_MAX_WORKERS];
	JobqEscalation reasons[JOBQ_MAX_WORKERS];
	int64		peeked[JOBQ_MAX_WORKERS];	/* per slot: the job whose reason was read */
	uint32		deaths;
	int			changed = 0;
	int			n = 0;
	int			i;

	/*
	 * Which entries are ours to settle: those of free slots, of slots whose
	 * worker has not settled yet, and our own.  Decided before the entries
	 * are read: none of those slots can get a new entry while we hold the
	 * lock.
	 */
	SpinLockAcquire(&Settle->mutex);
	deaths = Settle->deaths;
	done = Settle->settled[slot] && Settle->settled_deaths == deaths;
	SpinLockRelease(&Settle->mutex);
	if (done)
	{
		/* another worker did it while we waited for the lock */
		CommitTransactionCommand();
		MemoryContextSwitchTo(oldcxt);
		return;
	}
	settleable(slot, take);
	memset(peeked, 0, sizeof(peeked));

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqJournalEntry e = journal_entries[i];

		if (!take[i] || e.job_id == 0)
		{
			take[i] = false;
			continue;
		}
		/* entries of another database or timeline are only cleared */
		if (e.dboid != MyDatabaseId || e.tli != tli)
			continue;
		ids[n] = e.job_id;
		attempts[n] = e.attempt;
		started[n] = e.started_at;
		pids[n] = e.pid;
		/*
		 * The worker may have ended the job itself (see worker.c): read why,
		 * but forget it only once the commit below has recorded it, so that
		 * a settlement that fails leaves it to the next one.
		 */
		reasons[n] = JobqEscalationPeek(i, e.job_id);
		peeked[i] = e.job_id;
		n++;
	}

	if (n > 0)
		changed = JobqCountCrashedAttempts(n, ids, attempts, started, pids,
										   reasons);
	CommitTransactionCommand();
	MemoryContextSwitchTo(oldcxt);

	/* recorded: the reasons read above may be forgotten now */
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		if (peeked[i] != 0)
			(void) JobqEscalationTake(i, peeked[i]);

	/*
	 * The settlement locked the jobs it changed, and a claim meanwhile may
	 * have raised a floor past them: see claim.c.
	 */
	if (changed > 0)
		JobqFloorsReset(JOBQ_FLOORS_WORKERS);

	/* a slot taken meanwhile belongs to a worker that has not settled */
	settleable(slot, clear);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		if (take[i] && clear[i])
			JobqJournalEnd(i);

	SpinLockAcquire(&Settle->mutex);
	Settle->settled[slot] = true;
	if ((int32) (deaths - Settle->settled_deaths) > 0)
		Settle->settled_deaths = deaths;
	SpinLockRelease(&Settle->mutex);
}
