# Included by ctest after the discovered GoogleTest lists (tests/CMakeLists.txt): the longest discovered tests start
# first. Costs are only an order (the longest first), not timings that any test checks.
set_tests_properties(
  OnePass.CountersEqualTheRealSpeculativeDecoderOnSmolLM2
  Evaluate.InterruptedRunResumesFromTheSweepLog
  Pipeline.RunsEveryStageThenSkipsWhatIsCompleteAndRedoesWhatIsMissing
  Evaluate.ReportNumbersAgreeWithTheCounters
  OnePass.Eagle3HeadOnSmolLM2IsLosslessAndCountsExactly
  PROPERTIES COST 500)
