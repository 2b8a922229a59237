-- doc_lineage: one row per current document saying how far it got and why it stopped.
-- Built from the current versions of every table, so it answers "why is this page not in the dataset?"
CREATE OR REPLACE VIEW doc_lineage AS
WITH recall AS (
    SELECT doc_id, max(round) AS recall_round, arg_max(score, round) AS recall_score,
           arg_max(kept, round) AS recalled
    FROM recall_scores GROUP BY doc_id
), extracted AS (
    SELECT doc_id, count(*) FILTER (WHERE status = 'ok') AS pairs_extracted,
           count(*) FILTER (WHERE status = 'failed') AS chunks_failed,
           count(*) FILTER (WHERE status = 'rejected') AS pairs_rejected,
           any_value(error) FILTER (WHERE error IS NOT NULL) AS extract_error
    FROM qa_extracted GROUP BY doc_id
), refined AS (
    SELECT r.doc_id,
           count(*) FILTER (WHERE r.status = 'ok') AS pairs_refined,
           count(*) FILTER (WHERE NOT d.kept) AS pairs_duplicate,
           count(DISTINCT c.id) AS pairs_contaminated
    FROM qa_refined r
    LEFT JOIN qa_duplicates d USING (refined_id)
    LEFT JOIN qa_contamination c ON c.id = r.refined_id AND c.level = 'pair' AND coalesce(c.flagged, true)
    GROUP BY r.doc_id
), doc_contamination AS (
    SELECT id AS doc_id, any_value(benchmark) AS contaminated_by FROM qa_contamination
    WHERE level = 'document' AND coalesce(flagged, true) GROUP BY id
), final AS (
    SELECT doc_id, count(*) AS pairs_in_dataset FROM dataset GROUP BY doc_id
)
SELECT d.doc_id, d.url, d.domain, d.source_file, d.truncated,
       recall.recall_round, recall.recall_score, recall.recalled,
       extracted.pairs_extracted, extracted.pairs_rejected, extracted.chunks_failed, extracted.extract_error,
       refined.pairs_refined, refined.pairs_duplicate, refined.pairs_contaminated,
       doc_contamination.contaminated_by, coalesce(final.pairs_in_dataset, 0) AS pairs_in_dataset,
       CASE
           WHEN final.pairs_in_dataset > 0 THEN 'in dataset'
           WHEN recall.doc_id IS NULL THEN 'not scored by recall'
           WHEN NOT recall.recalled THEN 'not recalled'
           WHEN extracted.doc_id IS NULL THEN 'recalled, not extracted (yet)'
           WHEN extracted.pairs_extracted = 0 AND extracted.chunks_failed > 0 THEN 'extraction failed'
           WHEN extracted.pairs_extracted = 0 AND extracted.pairs_rejected > 0 THEN 'pairs rejected (not on the page)'
           WHEN extracted.pairs_extracted = 0 THEN 'no Q-A pairs on the page'
           WHEN coalesce(refined.pairs_refined, 0) = 0 THEN 'refinement failed or pending'
           WHEN doc_contamination.doc_id IS NOT NULL THEN 'page contains benchmark text'
           WHEN refined.pairs_contaminated > 0 AND refined.pairs_duplicate = 0 THEN 'pairs contaminated'
           WHEN refined.pairs_duplicate > 0 THEN 'pairs were duplicates'
           ELSE 'dropped by curation'
       END AS fate
FROM documents d
LEFT JOIN recall USING (doc_id)
LEFT JOIN extracted USING (doc_id)
LEFT JOIN refined USING (doc_id)
LEFT JOIN doc_contamination USING (doc_id)
LEFT JOIN final USING (doc_id);
