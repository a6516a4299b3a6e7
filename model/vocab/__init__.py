"""The tag vocabulary: words, labels as whole phrases, and the labels' WordNet hypernyms."""
