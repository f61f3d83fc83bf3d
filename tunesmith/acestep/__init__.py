"""ACE-Step 1.5: songs with sung lyrics, from diffusers' AceStepPipeline folders."""
