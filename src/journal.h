/*-------------------------------------------------------------------------
 *
 * journal.h
 *		The attempt each worker is in, kept outside the database (journal.c).
 *
 * IDENTIFICATION
 *		src/journal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_JOURNAL_H
#define JOBQ_JOURNAL_H

#include "jobq.h"

/* journal.c: the attempt a worker is in, kept outside the database */
extern Size JobqJournalShmemSize(void);
extern void JobqJournalShmemInit(void);
extern void JobqJournalNoteDeath(void);
extern bool JobqJournalSettleNeeded(int slot);
extern void JobqJournalUnsettled(int slot);
extern void JobqJournalBegin(int slot, const JobqJob *job, TimestampTz started);
extern void JobqJournalEnd(int slot);
extern void JobqJournalSettle(int slot);

#endif							/* JOBQ_JOURNAL_H */
